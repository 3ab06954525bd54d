"""Pix2Pix-Zero's inversion loop: DDIM inversion whose noise prediction is regularized at every step."""
from __future__ import annotations

from collections.abc import Callable

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core import ddim, denoise
from cyclediff.runtime.methods.pix2pix_zero.inverse_schedule import InverseTable
from cyclediff.runtime.methods.pix2pix_zero.regularizer import RegularizerParams, regularize


def invert_latents(unet: ModelRunner, x0: torch.Tensor, table: InverseTable, embeds: torch.Tensor,
                   guidance_scale: float, reg: RegularizerParams, generator: torch.Generator | None,
                   callback: Callable | None = None, callback_steps: int = 1, progress=None) -> torch.Tensor:
    """x0 (1, C, h, w) clean latents; embeds (g, 77, D): [negative, prompt] with guidance (g = 2) or [prompt]
    -> x_T (1, C, h, w). Forward-only: runs on every backend. The regularizer's roll shifts are drawn from
    `generator` after the caller's VAE sample, as in diffusers."""
    g = embeds.shape[0]
    x = x0.clone()
    sample, pred = torch.empty((g, *x.shape[1:]), device=x.device), torch.empty((g, *x.shape[1:]), device=x.device)
    eps, nxt, tmp = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
    for i in range(table.num_steps):
        t = torch.full((g,), float(table.timesteps[i]), device=x.device)
        denoise.predict(unet, x, sample, t, embeds, pred)
        denoise.guided_eps(eps, pred, guidance_scale if g == 2 else None, tmp)
        reg_eps = regularize(eps, reg, generator)
        # x_t = sqrt(ᾱ_t)·x̂0 + sqrt(1 − ᾱ_t)·ε with x̂0 from level t − r: the DDIM mean, coefficients swapped.
        ddim.ddim_mean(nxt, x, reg_eps, table.sqrt_a_from[i], table.sqrt_b_from[i], table.sqrt_a_to[i],
                       table.dir_to[i], tmp)
        x.copy_(nxt)
        if callback is not None and i % callback_steps == 0:
            callback(i, table.timesteps[i], x)
        if progress is not None:
            progress.update(1)
    return x
