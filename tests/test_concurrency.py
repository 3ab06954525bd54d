"""One Engine, many threads: every concurrent call returns what it returns alone; compatible UNet calls merge.

The references are the same calls made one at a time on the same (idle) Engine. Merged UNet calls change the
batch size, so results may differ by batch-dependent float rounding (bound 1e-4); calls that cannot merge
(max_batch=1) must be bitwise equal.

No assertion depends on timing: whether calls merge is decided by what is queued when a batch is taken, so the
tests that assert a merge hold the running UNet call until the jobs to merge are queued behind it.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from fake_unet import toy_unet_spec
from reference import sample_image

from cyclediff import Engine, LatentCode
from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import UNET
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
    # A longer merge window than the default makes the mixed test below merge more often; no assertion needs it.
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
    """Whatever merges happen (they depend on thread timing), every call returns what it returns alone."""
    before = dict(engine.dispatcher.stats)
    alone, together = _alone_and_together(engine, threads=15)
    worst = _compare(alone, together, bitwise=False)
    merged = engine.dispatcher.stats["merged_calls"] - before["merged_calls"]
    print(f"\n{engine.backend}: concurrent vs alone max abs diff {worst:.2e}, {merged} merged UNet calls")
    assert worst <= 1e-4
    after = _outcome(engine, _requests(engine.manifest.sample_size)[0], None)  # still usable after the error
    np.testing.assert_array_equal(after, alone[0])


class HeldUnet(ModelRunner):
    """Wraps a dispatcher's UNet runner: its first call (made by the leader, so the dispatcher is busy) waits
    until `queued` more UNet jobs are queued behind it, so that the next batch the dispatcher takes holds them
    all. Records the batch size of every call."""

    def __init__(self, dispatcher: ModelDispatcher, queued: int):
        super().__init__(dispatcher.runners[UNET].spec)
        self.dispatcher, self.inner, self.queued = dispatcher, dispatcher.runners[UNET], queued
        self.entered, self.sizes = threading.Event(), []

    def _enough_queued(self) -> bool:
        return sum(job.model == UNET for job in self.dispatcher._queue) >= self.queued

    def __call__(self, feeds, outputs):
        if not self.entered.is_set():  # only the leader calls the runner: no race on the first call
            self.entered.set()
            with self.dispatcher._cond:  # notified by every job that is queued
                assert self.dispatcher._cond.wait_for(self._enough_queued, timeout=60), "jobs never queued"
        self.sizes.append(int(feeds["sample"].shape[0]))
        self.inner(feeds, outputs)


def test_compatible_concurrent_calls_are_merged(engine, monkeypatch):
    """Three decodes of one code: the first one's UNet call is held until the other two have queued theirs;
    those two are then one merged UNet call, and every decode still returns what it returns alone."""
    code = _code(engine)
    alone = engine.decode(code, "a fox", output_type="latent").images  # caches the prompts: then UNet calls only
    held = HeldUnet(engine.dispatcher, queued=2)
    monkeypatch.setitem(engine.dispatcher.runners, UNET, held)
    before = dict(engine.dispatcher.stats)
    results: list = [None] * 3

    def decode(k: int) -> None:
        results[k] = engine.decode(code, "a fox", output_type="latent").images

    threads = [threading.Thread(target=decode, args=(k,)) for k in range(3)]
    threads[0].start()
    assert held.entered.wait(60), "the first decode never reached the UNet"
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert engine.dispatcher.stats["merged_calls"] > before["merged_calls"], "no UNet calls were merged"
    assert max(held.sizes) >= 2 * held.sizes[0]  # two jobs of batch 2 ([uncond, cond]) at least, in one call
    for got in results:
        assert got is not None and float((got - alone).abs().max()) <= 1e-4


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
        super().__init__(toy_unet_spec())
        self.sizes: list[int] = []
        self.gate, self.entered = threading.Event(), threading.Event()

    def __call__(self, feeds, outputs):
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
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


def _dispatch_held(d: ModelDispatcher, unet: FakeUnet, jobs) -> list[BaseException | None]:
    """Job 0 runs first and is held inside the UNet until every other job is queued; then the gate opens."""
    errors: list[BaseException | None] = [None] * len(jobs)

    def go(i):
        with d.in_flight():
            try:
                d.call(UNET, *jobs[i])
            except BaseException as err:  # noqa: BLE001
                errors[i] = err

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(jobs))]
    threads[0].start()
    assert unet.entered.wait(60), "job 0 never reached the UNet"
    for t in threads[1:]:
        t.start()
    with d._cond:  # notified by every job that is queued
        assert d._cond.wait_for(lambda: len(d._queue) == len(jobs) - 1, timeout=60), "jobs never queued"
    unet.gate.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_dispatcher_merges_splits_and_isolates_a_failing_job():
    unet = FakeUnet()
    # No merge window: every job to merge is queued before the leader takes the batch.
    d = ModelDispatcher({UNET: unet}, torch.device("cpu"), BatchingConfig(max_batch=6, wait_ms=0))
    jobs = [_job(2, 1.0), _job(1, 2.0), _job(2, float("nan")), _job(3, 4.0)]
    errors = _dispatch_held(d, unet, jobs)
    assert [type(e).__name__ if e else None for e in errors] == [None, None, "ValueError", None]
    for (feeds, out), err in zip(jobs, errors):
        if err is None:
            torch.testing.assert_close(out["noise_pred"], 2 * feeds["sample"] + 3 + 1, rtol=0, atol=0)
    assert max(unet.sizes) > 3 and max(unet.sizes) <= 6  # merged, within the limit
    # job 0 alone (held), then jobs 1-3 merged (1 + 2 + 3 = the limit 6, in whatever order they queued), which
    # fails on the NaN: then each one alone
    assert unet.sizes[:2] == [2, 6] and sorted(unet.sizes[2:]) == [1, 2, 3] and d.stats["merged_calls"] == 1


def test_dispatcher_alone_runs_at_once_on_the_callers_buffers():
    unet = FakeUnet()
    unet.gate.set()
    d = ModelDispatcher({UNET: unet}, torch.device("cpu"), BatchingConfig(max_batch=4, wait_ms=1000))
    feeds, out = _job(2, 1.0)
    with d.in_flight():
        d.call(UNET, feeds, out)  # in flight alone: nobody else can queue, so no wait for company
    assert unet.sizes == [2] and d.stats["waits"] == 0 and d.stats["merged_calls"] == 0 and d.pool.allocations == 0
