"""Progress bars (runtime/core/progress.py): a lone call's bar is today's tqdm bar; concurrent calls draw one bar.

tqdm's redraws are timed by its clock; the tests give it a fake one (one second per reading), so every update
redraws and the captured stream is the same on every run. Threads meet at barriers while their bars are open.
"""
from __future__ import annotations

import io
import itertools
import re
import threading

import pytest
import torch
import tqdm.std as tqdm_std
from reference import sample_image
from tqdm.auto import tqdm

from cyclediff import Engine
from cyclediff.runtime.core.progress import ProgressBars

THREADS = 8


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch):
    """tqdm reads its clock through tqdm.std.time: one second per reading, and no monitor thread."""
    clock = itertools.count()
    monkeypatch.setattr(tqdm_std, "time", lambda: float(next(clock)))
    monkeypatch.setattr(tqdm_std.tqdm, "monitor_interval", 0)


def _steps(bar, n: int) -> None:
    for _ in range(n):
        bar.update(1)


def test_a_lone_bar_is_exactly_the_plain_tqdm_bar(monkeypatch):
    """What Core.bar drew before progress.py: tqdm(total, desc, leave=False) on stderr, the same frames."""
    ours, plain = io.StringIO(), io.StringIO()
    for _ in range(2):  # and the next call's bar draws again once the first one closed
        with ProgressBars(True, ours).bar(5, "decode") as bar:
            _steps(bar, 5)
    monkeypatch.setattr(tqdm_std, "time", lambda c=itertools.count(): float(next(c)))  # the same clock again
    for _ in range(2):
        with tqdm(total=5, desc="decode", leave=False, file=plain) as bar:
            _steps(bar, 5)
    assert ours.getvalue() == plain.getvalue()
    assert ours.getvalue().count("5/5") == 2  # both bars drew every step (the clock makes each update redraw)


def test_a_disabled_bar_writes_nothing_but_counts_as_a_bar():
    out = io.StringIO()
    with ProgressBars(False, out).bar(3, "encode") as bar:
        _steps(bar, 3)
        bar.set_postfix({"energy": "1.0"}, refresh=False)  # what the guidance sampler calls
    assert out.getvalue() == ""


def test_concurrent_bars_draw_one_bar_and_never_interleave():
    out = io.StringIO()
    bars = ProgressBars(True, out)
    opened, stepped = threading.Barrier(THREADS), threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def call(k: int) -> None:
        try:
            with bars.bar(4, f"call{k}") as bar:
                opened.wait(timeout=60)  # every bar is open now: only the first to open may draw
                _steps(bar, 4)
                stepped.wait(timeout=60)  # nobody closes before everyone stepped
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    text = out.getvalue()
    drawn = set(re.findall(r"call\d+", text))
    assert len(drawn) == 1, f"{len(drawn)} bars drew at once: {sorted(drawn)}"
    (name,) = drawn
    # Every frame is the one bar's: its 0..4 of 4 in order, then the blank that leave=False closes with.
    frames = [f for f in text.split("\r") if f.strip()]
    assert [re.search(r"(\d)/4", f).group(1) for f in frames] == ["0", "1", "2", "3", "4"]
    assert all(f.startswith(f"{name}:") for f in frames)
    with bars.bar(2, "after") as bar:  # the drawing bar closed: the next call's bar draws
        _steps(bar, 2)
    assert "after:" in out.getvalue()[len(text):]


def test_engine_calls_in_flight_together_draw_one_bar(exports):
    """Two decodes whose bars are open at once (they meet in their step callback): one bar on the stream."""
    engine = Engine.load(exports("tiny"), backend="onnxruntime", progress=True)
    engine.core.progress.file = out = io.StringIO()
    code = engine.encode(sample_image(engine.manifest.sample_size), "a dog", num_inference_steps=5,
                         generator=torch.Generator().manual_seed(0))
    first = out.getvalue().count("encode:")
    met = threading.Barrier(2)
    results: list = [None, None]

    def decode(k: int) -> None:
        def meet(i, t, latents):
            if i == 0:
                met.wait(timeout=60)

        results[k] = engine.decode(code, "a cat", output_type="np", callback=meet).images

    threads = [threading.Thread(target=decode, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert first > 0 and all(r is not None for r in results)
    steps = len(code.timesteps)
    frames = [f for f in out.getvalue().split("\r") if f.startswith("decode:")]
    assert sum(f" 0/{steps} " in f for f in frames) == 1, frames  # one decode bar drew its first frame
    assert sum(f" {steps}/{steps} " in f for f in frames) == 1, frames  # and its last; the other stayed silent
