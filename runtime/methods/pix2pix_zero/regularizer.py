"""The noise regularizer of Pix2Pix-Zero's inversion: auto-correlation and KL gradient steps on ε, as diffusers."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from cyclediff.runtime.core.checks import check_number


@dataclasses.dataclass(frozen=True)
class RegularizerParams:
    """diffusers' `invert` arguments and defaults."""

    lambda_auto_corr: float = 20.0
    lambda_kl: float = 20.0
    num_reg_steps: int = 5
    num_auto_corr_rolls: int = 5

    def __post_init__(self):
        for name in ("lambda_auto_corr", "lambda_kl"):
            check_number(name, getattr(self, name))
        for name in ("num_reg_steps", "num_auto_corr_rolls"):
            check_number(name, getattr(self, name), integer=True, low=0)
        if self.lambda_auto_corr > 0 and self.num_auto_corr_rolls == 0:
            raise ValueError("num_auto_corr_rolls=0 divides the auto-correlation gradient by zero; pass >= 1 or "
                             "lambda_auto_corr=0")


def regularize(eps: torch.Tensor, params: RegularizerParams, generator: torch.Generator | None) -> torch.Tensor:
    """ε (B, C, h, w) -> regularized ε. Each auto-correlation evaluation draws one roll shift per pyramid level
    from `generator` (diffusers' order: item, channel, level), so the result depends on the generator stream."""
    eps = eps.detach()
    for _ in range(params.num_reg_steps):
        if params.lambda_auto_corr > 0:
            for _ in range(params.num_auto_corr_rolls):
                grad = _grad(eps, lambda e: auto_corr_loss(e, generator)) / params.num_auto_corr_rolls
                eps = eps - params.lambda_auto_corr * grad
        if params.lambda_kl > 0:
            eps = eps - params.lambda_kl * _grad(eps, kl_divergence)
    return eps


def _grad(eps: torch.Tensor, loss) -> torch.Tensor:
    """d loss(ε) / d ε for a fresh leaf copy of ε (the reference's autograd Variable)."""
    leaf = eps.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss(leaf), leaf)
    return grad


def auto_corr_loss(eps: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Σ over items, channels and pyramid levels (halving down to a side <= 8) of the squared mean correlation
    of the map with itself rolled by a random s in [0, h/2) along each spatial axis."""
    total = torch.zeros((), device=eps.device, dtype=eps.dtype)
    for i in range(eps.shape[0]):
        for j in range(eps.shape[1]):
            level = eps[i: i + 1, j: j + 1]  # (1, 1, h, w)
            while True:
                # A CPU draw even for a GPU tensor: torch.randint without a device, as the reference calls it.
                shift = int(torch.randint(level.shape[2] // 2, (1,), generator=generator).item())
                total = total + (level * torch.roll(level, shifts=shift, dims=2)).mean() ** 2
                total = total + (level * torch.roll(level, shifts=shift, dims=3)).mean() ** 2
                if level.shape[2] <= 8:
                    break
                level = F.avg_pool2d(level, kernel_size=2)
    return total


def kl_divergence(eps: torch.Tensor) -> torch.Tensor:
    """KL of N(mean, var) of all entries to N(0, 1), up to constants: var + mean² − 1 − log(var + 1e-7)."""
    mean, var = eps.mean(), eps.var()
    return var + mean**2 - 1 - torch.log(var + 1e-7)
