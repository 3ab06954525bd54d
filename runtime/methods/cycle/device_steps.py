"""The decoder's step on the device: coefficients gathered by a device step counter, so one graph serves every step.

A captured CUDA graph bakes in its kernels' arguments. Indexing the StepTable on the host (`sqrt_a[i]`)
would bake in step i; here the (K,) tables live on the device and a device int64 counter selects the
current column inside the graph (`index_select`, no `.item()`, no host sync), then `counter.add_(1)`.
"""
from __future__ import annotations

import dataclasses

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core import denoise
from cyclediff.runtime.core.schedule import StepTable

COEFS = ("timestep", "sqrt_a", "sqrt_b", "sqrt_a_prev", "dir_coef", "sigma")


@dataclasses.dataclass(frozen=True)
class StepCoefs:
    """The current step's coefficients: 0-d float32 views of DeviceStepTable.current (fixed addresses)."""

    timestep: torch.Tensor
    sqrt_a: torch.Tensor
    sqrt_b: torch.Tensor
    sqrt_a_prev: torch.Tensor
    dir_coef: torch.Tensor
    sigma: torch.Tensor

    @property
    def ddim(self) -> denoise.Coefs:
        """The five coefficients of ddim.ddim_step, in its order (denoise.STEP)."""
        return self.sqrt_a, self.sqrt_b, self.sqrt_a_prev, self.dir_coef, self.sigma


class DeviceStepTable:
    def __init__(self, table: StepTable, device: torch.device):
        self.num_steps = table.num_steps
        self.values = torch.empty((len(COEFS), table.num_steps), dtype=torch.float32, device=device)  # (6, K)
        self.counter = torch.zeros((), dtype=torch.int64, device=device)  # the device step index i
        self.current = torch.empty((len(COEFS), 1), dtype=torch.float32, device=device)  # (6, 1): column i
        self.coefs = StepCoefs(*(self.current[j, 0] for j in range(len(COEFS))))
        self.load(table)

    def load(self, table: StepTable) -> None:
        """New coefficients into the same buffers (a graph captured on them stays valid); counter back to 0."""
        if table.num_steps != self.num_steps:
            raise ValueError(f"table has {table.num_steps} steps; this DeviceStepTable holds {self.num_steps}")
        cols = [table.timesteps.to(torch.float32)] + [getattr(table, n) for n in COEFS[1:]]
        self.values.copy_(torch.stack(cols))
        self.counter.zero_()

    def gather(self) -> StepCoefs:
        """Copy column `counter` of the table into `current`; the returned views then hold step i's values."""
        torch.index_select(self.values, 1, self.counter.view(1), out=self.current)
        return self.coefs

    def gather_rows(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out = src[counter] for src (K, *S) and out (*S), e.g. the recorded noise z_i (B, C, h, w)."""
        torch.index_select(src, 0, self.counter.view(1), out=out.unsqueeze(0))
        return out

    def advance(self) -> None:
        self.counter.add_(1)

    def reset(self, step: int = 0) -> None:
        self.counter.fill_(step)


class DeviceDecoderStep:
    """DdimDecoder's step with device-indexed coefficients: capturable once, replayed K times.

    Buffers (DdimDecoder._buffers' names, plus "z" (B, C, h, w) for the gathered noise) and `noises`
    (K, B, C, h, w) or None are fixed tensors the graph reads; the guidance scale is a 0-d device tensor
    so a new scale needs no re-capture. Each call advances the table's counter.
    """

    def __init__(self, unet: ModelRunner, table: DeviceStepTable, bufs: dict[str, torch.Tensor],
                 noises: torch.Tensor | None, guidance_scale: torch.Tensor | None):
        self.unet, self.table, self.bufs, self.noises = unet, table, bufs, noises
        self.scale = guidance_scale  # None: unguided (one text group)

    def __call__(self) -> torch.Tensor:
        bufs, c = self.bufs, self.table.gather()
        t = bufs["t"]
        t.copy_(c.timestep.expand(t.shape))  # (g·B,) from the 0-d device value: no host sync
        z = None if self.noises is None else self.table.gather_rows(self.noises, bufs["z"])
        denoise.decoder_step(self.unet, bufs, self.scale, z, c.ddim)  # DdimDecoder's step, the same ops
        self.table.advance()
        return bufs["x"]
