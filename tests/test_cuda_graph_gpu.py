"""CUDA graphs on a GPU: a decoder step captured and replayed against the eager decoder, and the Engine's
dispatcher (each merged UNet shape captured once, shared pool) against cuda_graphs=False, with concurrent callers.

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
from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core import graph_capture
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.graph_capture import CudaGraphDevice, Phase
from cyclediff.runtime.core.schedule import SchedulerConfig, StepTable
from cyclediff.runtime.methods.cycle.decoder import DdimDecoder, TargetText
from cyclediff.runtime.methods.cycle.graph_decoder import GraphDdimDecoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none is visible"),
]


def _tiny_unet(device: torch.device) -> tuple[ModelRunner, tuple[int, int]]:
    """The built-in tiny checkpoint's UNet through the torch backend; returns it and (text_len, text_width)."""
    from cyclediff.engine.torch_backend import TorchModel
    from cyclediff.export import checkpoint, models
    from cyclediff.export.specs import UNET, Dims, specs

    comps = checkpoint.load(checkpoint.resolve("tiny"))
    dims = Dims.of(comps.text_encoder, comps.vae, comps.unet)
    graph = models.graphs(comps)[UNET]
    return TorchModel(graph, specs(dims)[UNET], device), (dims.text_len, dims.text_width)


class NoSyncDevice(CudaGraphDevice):
    """CudaGraphDevice whose replays run under sync-debug 'error': a host sync inside a replay would raise."""

    def replay(self, graph):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return super().replay(graph)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _captured_run(unet, table, x_T, noises, text, device):
    devices = []
    decoder = GraphDdimDecoder(unet, BufferPool(device), lambda: devices.append(NoSyncDevice(device)) or devices[-1])
    decoder.run(x_T, noises, table, text)  # first run: warm-up (eager), capture, replays
    out = decoder.run(x_T, noises, table, text).clone()  # replays only, on the same graph
    again = decoder.run(x_T, noises, table, text)
    torch.cuda.synchronize()
    assert len(devices) == 1 and torch.equal(out, again)
    return out


@pytest.mark.parametrize("eta, guidance", [(0.1, 7.5), (0.0, None)])
def test_captured_tiny_unet_decoder_matches_eager(eta, guidance):
    device = torch.device("cuda")
    unet, (text_len, width) = _tiny_unet(device)
    table = StepTable.build(SchedulerConfig(), 10, 0.8, eta)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(1, 4, 4, 4, generator=g).to(device)
    noises = torch.randn(table.num_steps, 1, 4, 4, 4, generator=g).to(device) if eta > 0 else None
    cond = torch.randn(1, text_len, width, generator=g).to(device)
    uncond = torch.randn(1, text_len, width, generator=g).to(device) if guidance else None
    text = TargetText(cond, uncond, guidance or 1.0)
    want = DdimDecoder(unet, BufferPool(device)).run(x_T, noises, table, text).clone()
    got = _captured_run(unet, table, x_T, noises, text, device)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


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
