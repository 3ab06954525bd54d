"""DdimDecoder with its step in a replayed graph: one capture per shape, then one replay per step, no host sync."""
from __future__ import annotations

from typing import Callable

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.cancel import check_cancelled
from cyclediff.runtime.core.graph_capture import CaptureConfig, CapturedStep, CudaGraphDevice, GraphDevice
from cyclediff.runtime.core.schedule import StepTable
from cyclediff.runtime.methods.cycle.decoder import Callback, DdimDecoder, TargetText
from cyclediff.runtime.methods.cycle.device_steps import DeviceDecoderStep, DeviceStepTable

# (batch, latent shape, guidance groups, steps K, with noise): what a captured step graph is specific to
Key = tuple[int, tuple[int, ...], int, int, bool]


class _Captured:
    """One shape's captured step and the fixed tensors it reads: step table, guidance scale, noises (K, B, C, h, w)."""

    def __init__(self, step: CapturedStep, table: DeviceStepTable, scale: torch.Tensor | None,
                 noises: torch.Tensor | None):
        self.step, self.table, self.scale, self.noises = step, table, scale, noises


class GraphDdimDecoder(DdimDecoder):
    """Same results as DdimDecoder.run; per run it only copies x_T, the noises, the text and the coefficients."""

    def __init__(self, unet: ModelRunner, pool: BufferPool, device: Callable[[], GraphDevice] | None = None,
                 config: CaptureConfig = CaptureConfig()):
        super().__init__(unet, pool)
        self.make_device = device or (lambda: CudaGraphDevice(pool.device))
        self.config = config
        self._captured: dict[Key, _Captured] = {}

    def run(self, x_T: torch.Tensor, noises: torch.Tensor | None, table: StepTable, text: TargetText,
            callback: Callback | None = None, callback_steps: int = 1, progress=None) -> torch.Tensor:
        b, lat = x_T.shape[0], tuple(x_T.shape)
        g = 2 if text.uncond is not None else 1
        bufs = self._buffers(b, lat, g, text)  # also copies the text embeddings in: outside the graph
        c = self._for(bufs, (b, lat, g, table.num_steps, noises is not None), table)
        c.table.load(table)
        if c.scale is not None:
            c.scale.fill_(text.guidance_scale)
        if c.noises is not None:
            c.noises.copy_(noises)
        bufs["x"].copy_(x_T)
        for i in range(table.num_steps):
            check_cancelled()  # a replayed graph does not pass through the dispatcher's check
            c.step()
            if callback is not None and i % callback_steps == 0:
                callback(i, table.timesteps[i], bufs["x"])
            if progress is not None:
                progress.update(1)
        return bufs["x"]

    def _for(self, bufs: dict[str, torch.Tensor], key: Key, table: StepTable) -> _Captured:
        if key not in self._captured:
            _, lat, g, k, noisy = key
            device = self.pool.device
            bufs["z"] = self.pool.get("dec.z", lat)
            # the latents' dtype: then scale·(c − u) rounds exactly as with the host's Python float
            scale = torch.zeros((), dtype=bufs["x"].dtype, device=device) if g == 2 else None
            noises = self.pool.get("dec.noises", (k, *lat)) if noisy else None
            steps = DeviceStepTable(table, device)
            fn = DeviceDecoderStep(self.unet, steps, bufs, noises, scale)
            self._captured[key] = _Captured(CapturedStep(fn, self.make_device(), self.config), steps, scale, noises)
        return self._captured[key]
