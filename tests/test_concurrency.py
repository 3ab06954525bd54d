"""One Engine, many threads: every concurrent call returns what it returns alone; compatible UNet calls merge.

The references are the same calls made one at a time on the same (idle) Engine. Merged UNet calls change the
batch size, so results may differ by batch-dependent float rounding (bound 1e-4); calls that cannot merge
(max_batch=1) must be bitwise equal.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from reference import sample_image

from cyclediff import Engine, LatentCode
from cyclediff.engine.base import ModelRunner
from cyclediff.export.models import UNET, ModelSpec, TensorSpec
from cyclediff.runtime.core.dispatcher import BatchingConfig, ModelDispatcher

BACKENDS = ["onnxruntime", "torch"]


class Boom(RuntimeError):
    pass


def _raise_at_step_2(i, t, latents):
    if i == 2:
        raise Boom("callback raised mid-way")


def _requests(size: int) -> list[dict]:
    """Mixed shapes, step counts, strengths, guidance on/off, prompts, eta, and one caller that raises."""
    small, big = sample_image(size, seed=1), sample_image(2 * size, seed=2)
    out = []
    for k in range(14):
        out.append(dict(
            kind="edit", image=big if k % 5 == 4 else small, prompt=["a cat", "a red car", "a bird"][k % 3],
            source_prompt=["a dog", "a photo"][k % 2], num_inference_steps=[5, 6][k % 2],
            strength=[0.8, 0.6, 1.0][k % 3], guidance_scale=[7.5, 1.0, 3.0][k % 3],
            source_guidance_scale=[1.0, 2.0][k % 2], eta=[0.1, 0.0, 0.7][k % 3], seed=100 + k))
    out.append(dict(kind="encode", image=small, source_prompt="a dog", num_inference_steps=6, eta=0.4, seed=7))
    out.append(dict(kind="decode", prompt="a fox", seed=8))
    out.append(dict(kind="edit", image=small, prompt="a cat", source_prompt="a dog", num_inference_steps=5,
                    seed=9, callback=_raise_at_step_2))
    out.append(dict(kind="edit", image=np.full((size, size, 3), np.nan, np.float32), prompt="a cat",
                    source_prompt="a dog", seed=10))  # a bad argument
    return out


def _run(engine: Engine, req: dict, code: LatentCode):
    args = {k: v for k, v in req.items() if k not in ("kind", "seed")}
    gen = torch.Generator().manual_seed(req["seed"])
    if req["kind"] == "encode":
        c = engine.encode(generator=gen, **args)
        return torch.cat([c.x_T.flatten(), c.noises.flatten()]).numpy()
    if req["kind"] == "decode":
        return engine.decode(code, output_type="np", **args).images
    return engine.edit(generator=gen, output_type="np", **args).images


def _outcome(engine, req, code):
    try:
        return _run(engine, req, code)
    except (Boom, ValueError) as err:
        return err


def _compare(alone, together, bitwise: bool) -> float:
    worst = 0.0
    for a, b in zip(alone, together):
        if isinstance(a, Exception):
            assert type(b) is type(a) and str(b) == str(a), f"expected the caller's own error {a!r}, got {b!r}"
            continue
        assert not isinstance(b, Exception), f"unexpected error {b!r}"
        if bitwise:
            np.testing.assert_array_equal(a, b)
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request, exports):
    return Engine.load(exports("tiny"), backend=request.param, progress=False, batch_wait_ms=50)


def _code(engine: Engine) -> LatentCode:
    image = sample_image(engine.manifest.sample_size)
    return engine.encode(image, "a dog", num_inference_steps=6, eta=0.3, generator=torch.Generator().manual_seed(3))


def _alone_and_together(engine: Engine, threads: int):
    reqs, code = _requests(engine.manifest.sample_size), _code(engine)
    alone = [_outcome(engine, r, code) for r in reqs]
    barrier = threading.Barrier(threads)

    def go(r):
        barrier.wait(timeout=60) if reqs.index(r) < threads else None
        return _outcome(engine, r, code)

    with ThreadPoolExecutor(threads) as pool:
        together = list(pool.map(go, reqs))
    return alone, together


def test_concurrent_calls_equal_calls_alone(engine):
    before = dict(engine.dispatcher.stats)
    alone, together = _alone_and_together(engine, threads=15)
    worst = _compare(alone, together, bitwise=False)
    print(f"\n{engine.backend}: concurrent vs alone max abs diff {worst:.2e}")
    assert worst <= 1e-4
    assert engine.dispatcher.stats["merged_calls"] > before["merged_calls"], "no UNet calls were merged"
    after = _outcome(engine, _requests(engine.manifest.sample_size)[0], None)  # still usable after the error
    np.testing.assert_array_equal(after, alone[0])


def test_unmerged_concurrent_calls_are_bitwise_equal(exports):
    engine = Engine.load(exports("tiny"), backend="onnxruntime", progress=False, max_batch=1)
    alone, together = _alone_and_together(engine, threads=6)
    _compare(alone, together, bitwise=True)
    assert engine.dispatcher.stats["merged_calls"] == 0


def test_max_concurrency_bounds_the_workspaces(exports):
    engine = Engine.load(exports("tiny"), backend="onnxruntime", progress=False, max_concurrency=2)
    image = sample_image(engine.manifest.sample_size)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda k: engine.edit("a cat", "a dog", image, num_inference_steps=3, output_type="np",
                                            generator=torch.Generator().manual_seed(k)), range(6)))
    assert len(engine.workspaces._all) <= 2


# ---- the dispatcher alone, with a fake UNet -------------------------------------------------------------------

class FakeUnet(ModelRunner):
    """noise_pred = 2·sample + t + mean(emb); raises on a NaN sample. Records the batch size of every call."""

    def __init__(self):
        spec = ModelSpec(UNET, (TensorSpec("sample", "float32", ("B", 4, 2, 2)),
                                TensorSpec("timestep", "float32", ("B",)),
                                TensorSpec("encoder_hidden_states", "float32", ("B", 3, 5))),
                         (TensorSpec("noise_pred", "float32", ("B", 4, 2, 2)),))
        super().__init__(spec)
        self.sizes: list[int] = []
        self.gate = threading.Event()

    def __call__(self, feeds, outputs):
        self.gate.wait(10)
        s = feeds["sample"]
        self.sizes.append(s.shape[0])
        if torch.isnan(s).any():
            raise ValueError("NaN sample")
        emb = feeds["encoder_hidden_states"].mean(dim=(1, 2)).view(-1, 1, 1, 1)
        outputs["noise_pred"].copy_(2 * s + feeds["timestep"].view(-1, 1, 1, 1) + emb)


def _job(n: int, value: float):
    feeds = {"sample": torch.full((n, 4, 2, 2), value), "timestep": torch.full((n,), 3.0),
             "encoder_hidden_states": torch.full((n, 3, 5), 1.0)}
    return feeds, {"noise_pred": torch.empty(n, 4, 2, 2)}


def _dispatch_all(d: ModelDispatcher, unet: FakeUnet, jobs) -> list[BaseException | None]:
    errors: list[BaseException | None] = [None] * len(jobs)

    def go(i):
        with d.in_flight():
            try:
                d.call(UNET, *jobs[i])
            except BaseException as err:  # noqa: BLE001
                errors[i] = err

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    unet.gate.set()
    for t in threads:
        t.join(30)
    return errors


def test_dispatcher_merges_splits_and_isolates_a_failing_job():
    unet = FakeUnet()
    d = ModelDispatcher({UNET: unet}, torch.device("cpu"), BatchingConfig(max_batch=6, wait_ms=500))
    jobs = [_job(2, 1.0), _job(1, 2.0), _job(2, float("nan")), _job(3, 4.0)]
    errors = _dispatch_all(d, unet, jobs)
    assert [type(e).__name__ if e else None for e in errors] == [None, None, "ValueError", None]
    for (feeds, out), err in zip(jobs, errors):
        if err is None:
            torch.testing.assert_close(out["noise_pred"], 2 * feeds["sample"] + 3 + 1, rtol=0, atol=0)
    assert max(unet.sizes) > 3 and max(unet.sizes) <= 6  # merged, within the limit


def test_dispatcher_alone_runs_at_once_on_the_callers_buffers():
    unet = FakeUnet()
    unet.gate.set()
    d = ModelDispatcher({UNET: unet}, torch.device("cpu"), BatchingConfig(max_batch=4, wait_ms=1000))
    feeds, out = _job(2, 1.0)
    with d.in_flight():
        d.call(UNET, feeds, out)  # in flight alone: nobody else can queue, so no wait for company
    assert unet.sizes == [2] and d.stats["waits"] == 0 and d.stats["merged_calls"] == 0 and d.pool.allocations == 0
