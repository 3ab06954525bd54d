"""The decoder: run the DDIM loop from x_T with the target prompt, injecting the recorded noises."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core import denoise
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.schedule import StepTable

Callback = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclasses.dataclass(frozen=True)
class TargetText:
    """Target conditioning. cond: (B, 77, D). uncond: (1, 77, D), or None when guidance_scale <= 1."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    guidance_scale: float


class DdimDecoder:
    """Owns the per-step buffers for one (batch, latent size); `run` allocates nothing per step."""

    def __init__(self, unet: ModelRunner, pool: BufferPool):
        self.unet = unet
        self.pool = pool

    def run(self, x_T: torch.Tensor, noises: torch.Tensor | None, table: StepTable, text: TargetText,
            callback: Callback | None = None, callback_steps: int = 1, progress=None) -> torch.Tensor:
        """x_T (B, C, h, w), noises (K, B, C, h, w) or None (eta = 0) -> final latents (B, C, h, w)."""
        b, lat = x_T.shape[0], tuple(x_T.shape)
        g = 2 if text.uncond is not None else 1
        bufs = self._buffers(b, lat, g, text)
        x = bufs["x"]
        x.copy_(x_T)
        coefs = table.coefficients(x.device)
        for i in range(table.num_steps):
            self._step(i, table, coefs, bufs, noises, text, g)
            if callback is not None and i % callback_steps == 0:
                callback(i, table.timesteps[i], x)
            if progress is not None:
                progress.update(1)
        return x

    def _buffers(self, b: int, lat: tuple[int, ...], g: int, text: TargetText) -> dict[str, torch.Tensor]:
        get = self.pool.get
        emb = get("dec.emb", (g * b, *text.cond.shape[1:]))
        # Batch layout as diffusers': [uncond × B, cond × B] with guidance, [cond × B] without.
        if g == 2:
            emb[:b].copy_(text.uncond.expand(b, -1, -1))
        emb[(g - 1) * b:].copy_(text.cond)
        return {
            "x": get("dec.x", lat), "sample": get("dec.sample", (g * b, *lat[1:])), "t": get("dec.t", (g * b,)),
            "emb": emb, "pred": get("dec.pred", (g * b, *lat[1:])), "eps": get("dec.eps", lat),
            "mean": get("dec.mean", lat), "tmp": get("dec.tmp", lat),
        }

    def _step(self, i, table, c, bufs, noises, text, g: int) -> None:
        bufs["t"].fill_(float(table.timesteps[i]))
        z = None if noises is None else noises[i]
        denoise.decoder_step(self.unet, bufs, text.guidance_scale if g == 2 else None, z, denoise.at(c, i))
