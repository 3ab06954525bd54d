"""The DDIM denoising step that every forward loop shares: the UNet on x for each text group, the guided ε, the
DDIM update (core/ddim.py's expression tree, so every loop agrees with the reference to the last bit).

Users: DdimDecoder, Pix2Pix-Zero's edit loops and its inversion (which takes only `predict` and `guided_eps`:
its update is the DDIM mean with swapped coefficients). The guidance sampler's generator stays out-of-place for
autograd.
"""
from __future__ import annotations

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core import ddim

# One step's coefficients, in ddim.ddim_step's order: 0-d float32 tensors
STEP = ("sqrt_a", "sqrt_b", "sqrt_a_prev", "dir_coef", "sigma")
Coefs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
Scale = float | torch.Tensor | None  # guidance scale; None: unguided (one text group)


def at(coefficients: dict[str, torch.Tensor], i: int) -> Coefs:
    """Step i of StepTable.coefficients' (K,) tensors."""
    return tuple(coefficients[name][i] for name in STEP)  # type: ignore[return-value]


def predict(unet: ModelRunner, x: torch.Tensor, sample: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
            pred: torch.Tensor) -> None:
    """pred (g·B, C, h, w) = UNet of x (B, C, h, w) copied once per text group of emb (g·B, 77, D) into sample
    (g·B, C, h, w), at timesteps t (g·B,) that the caller filled."""
    b = x.shape[0]
    for j in range(sample.shape[0] // b):
        sample[j * b: (j + 1) * b].copy_(x)
    unet({"sample": sample, "timestep": t, "encoder_hidden_states": emb}, {"noise_pred": pred})


def guided_eps(eps: torch.Tensor, pred: torch.Tensor, scale: Scale, tmp: torch.Tensor) -> None:
    """eps (B, C, h, w) from pred: rows [uncond × B, cond × B] guided by scale, or (scale None) pred itself."""
    if scale is None:
        eps.copy_(pred)
        return
    b = eps.shape[0]
    ddim.guide(eps, pred[:b], pred[b:], scale, tmp)


def step(x: torch.Tensor, pred: torch.Tensor, scale: Scale, z: torch.Tensor | None, coefs: Coefs,
         eps: torch.Tensor, mean: torch.Tensor, tmp: torch.Tensor) -> None:
    """x ← the DDIM step of x (B, C, h, w) with the guided ε of pred and variance noise z (None: eta = 0)."""
    guided_eps(eps, pred, scale, tmp)
    ddim.ddim_step(x, eps, z, *coefs, mean, tmp)


def decoder_step(unet: ModelRunner, bufs: dict[str, torch.Tensor], scale: Scale, z: torch.Tensor | None,
                 coefs: Coefs) -> None:
    """One target-branch step on DdimDecoder._buffers' tensors (x updated in place); bufs["t"] holds t already."""
    predict(unet, bufs["x"], bufs["sample"], bufs["t"], bufs["emb"], bufs["pred"])
    step(bufs["x"], bufs["pred"], scale, z, coefs, bufs["eps"], bufs["mean"], bufs["tmp"])
