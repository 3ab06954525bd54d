"""A real decoder step captured in a CUDA graph and replayed for every step, against the eager decoder (GPU only)."""
from __future__ import annotations

import pytest
import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.buffers import BufferPool
from cyclediff.runtime.decoder import DdimDecoder, TargetText
from cyclediff.runtime.graph_capture import CudaGraphDevice
from cyclediff.runtime.graph_decoder import GraphDdimDecoder
from cyclediff.runtime.schedule import SchedulerConfig, StepTable

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device; none is visible"),
]


def _tiny_unet(device: torch.device) -> tuple[ModelRunner, tuple[int, int]]:
    """The built-in tiny checkpoint's UNet through the torch backend; returns it and (text_len, text_width)."""
    from cyclediff.engine.torch_backend import TorchModel
    from cyclediff.export import checkpoint, models

    comps = checkpoint.load(checkpoint.resolve("tiny"))
    dims = models.Dims.of(comps.text_encoder, comps.vae, comps.unet)
    graph = models.graphs(comps)[models.UNET]
    return TorchModel(graph, models.specs(dims)[models.UNET], device), (dims.text_len, dims.text_width)


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
    out = decoder.run(x_T, noises, table, text).clone()
    again = decoder.run(x_T, noises, table, text)  # second run: replays only, on the same graph
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
