"""CUDA graphs on a GPU: the Engine's dispatcher (each merged UNet shape captured once, shared pool) against
cuda_graphs=False, with concurrent callers; a failed capture's stream handling on the real device.

Replays and eager runs may pick different kernels (cuBLAS inside a capture), so they are compared with a tight
tolerance, not bitwise; two replays of one graph must be bitwise equal."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from reference import sample_image
from test_concurrency import Boom, _compare, _requests

from cyclediff import Engine, LatentCode
from cyclediff.runtime.core import graph_capture
from cyclediff.runtime.core.graph_capture import CudaGraphDevice, Phase

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none is visible"),
]


def test_a_failed_capture_leaves_the_thread_on_its_own_stream():
    """A capture that fails (a host sync inside it) falls back to eager on the caller's stream, and the next
    capture on the same device still records and replays."""
    before = torch.cuda.current_stream()
    dev = CudaGraphDevice(torch.device("cuda"))
    x = torch.ones(4, device="cuda")
    with pytest.raises(RuntimeError):
        dev.capture(lambda: (x * 2).sum().item())  # .item() syncs: not capturable
    assert torch.cuda.current_stream() == before
    graph = dev.capture(lambda: x * 3)
    x.fill_(2.0)
    assert torch.equal(dev.replay(graph), torch.full((4,), 6.0, device="cuda"))


# ---- the Engine: the dispatcher captures each merged UNet shape ---------------------------------------------------

@pytest.fixture(scope="module")
def engines(exports):
    folder = exports("tiny")
    graph = Engine.load(folder, backend="torch", device="cuda", progress=False, batch_wait_ms=50)
    eager = Engine.load(folder, backend="torch", device="cuda", cuda_graphs=False, progress=False)
    return graph, eager


def _edit(engine: Engine, size: int, seed: int, prompt: str = "a cat") -> np.ndarray:
    return engine.edit(prompt, "a dog", sample_image(size), num_inference_steps=8, eta=0.1, output_type="np",
                       generator=torch.Generator().manual_seed(seed)).images


def test_dispatcher_captures_once_per_shape_and_replays(engines):
    graph, eager = engines
    failures = graph_capture.FAILURES.count
    size = graph.manifest.sample_size
    for seed in (0, 1, 2):  # the later calls replay
        np.testing.assert_allclose(_edit(graph, size, seed), _edit(eager, size, seed), atol=1e-4)
    steps = list(graph.dispatcher._captured.values())
    assert steps and all(s.phase is Phase.REPLAY and s.captures == 1 for s in steps)
    shapes = set(graph.dispatcher._captured)
    np.testing.assert_allclose(_edit(graph, 2 * size, 3), _edit(eager, 2 * size, 3), atol=1e-4)  # shape change
    assert set(graph.dispatcher._captured) > shapes  # new shapes got their own graphs; old ones are kept
    assert graph_capture.FAILURES.count == failures, "a capture failed and fell back to eager"


def _outcome(engine: Engine, req: dict, code: LatentCode):
    args = {k: v for k, v in req.items() if k not in ("kind", "seed")}
    gen = torch.Generator().manual_seed(req["seed"])
    try:
        if req["kind"] == "encode":
            c = engine.encode(generator=gen, **args)
            return torch.cat([c.x_T.flatten(), c.noises.flatten()]).cpu().numpy()
        if req["kind"] == "decode":
            return engine.decode(code, output_type="np", **args).images
        return engine.edit(generator=gen, output_type="np", **args).images
    except (Boom, ValueError) as err:
        return err


def test_concurrent_callers_through_captured_graphs_equal_calls_alone(engines):
    graph, _ = engines
    size = graph.manifest.sample_size
    code = graph.encode(sample_image(size), "a dog", num_inference_steps=6, eta=0.3,
                        generator=torch.Generator().manual_seed(3))
    reqs, threads = _requests(size), 8
    alone = [_outcome(graph, r, code) for r in reqs]
    barrier, before = threading.Barrier(threads), dict(graph.dispatcher.stats)

    def go(r):
        barrier.wait(timeout=60) if reqs.index(r) < threads else None
        return _outcome(graph, r, code)

    with ThreadPoolExecutor(threads) as pool:
        together = list(pool.map(go, reqs))
    assert _compare(alone, together, bitwise=False) <= 1e-4
    assert graph.dispatcher.stats["merged_calls"] > before["merged_calls"], "no UNet calls were merged"
