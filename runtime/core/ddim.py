"""The DDIM arithmetic of CycleDiffusion, written into caller-owned buffers in the reference's operation order.

Coefficients come from a StepTable as float32 tensors: 0-d for one step, or (K, 1, 1, 1, 1) to apply all
K steps at once. Every function reproduces diffusers' expression tree (same operands, same order), so
results agree to the last bit wherever the inputs do.
"""
from __future__ import annotations

import torch


def guide(eps: torch.Tensor, uncond: torch.Tensor, cond: torch.Tensor, scale: float | torch.Tensor,
          tmp: torch.Tensor) -> None:
    """eps = u + scale · (c − u)   (classifier-free guidance)."""
    torch.sub(cond, uncond, out=tmp)
    tmp.mul_(scale)
    torch.add(uncond, tmp, out=eps)


def posterior_step(out, xs, x0, sqrt_a, sqrt_b, sqrt_a_prev, dir_coef, sigma, noise, tmp) -> None:
    """Source branch: xs_prev = sqrt(ᾱ_prev)·x0 + sqrt(1−ᾱ_prev−σ²)·(xs − sqrt(ᾱ)·x0)/sqrt(1−ᾱ) + σ·n."""
    torch.mul(x0, sqrt_a, out=tmp)  # ᾱ**0.5 * x0
    torch.sub(xs, tmp, out=tmp)
    tmp.div_(sqrt_b)  # e_t
    tmp.mul_(dir_coef)  # dir_xt
    torch.mul(x0, sqrt_a_prev, out=out)
    out.add_(tmp)
    torch.mul(noise, sigma, out=tmp)
    out.add_(tmp)


def predicted_x0(out, x, eps, sqrt_a, sqrt_b) -> None:
    """x̂0 = (x − sqrt(1−ᾱ)·ε) / sqrt(ᾱ)."""
    torch.mul(eps, sqrt_b, out=out)
    torch.sub(x, out, out=out)
    out.div_(sqrt_a)


def ddim_mean(out, x, eps, sqrt_a, sqrt_b, sqrt_a_prev, dir_coef, tmp) -> None:
    """μ = sqrt(ᾱ_prev)·x̂0 + sqrt(1−ᾱ_prev−σ²)·ε: the DDIM step before its variance noise."""
    predicted_x0(tmp, x, eps, sqrt_a, sqrt_b)
    torch.mul(tmp, sqrt_a_prev, out=out)
    torch.mul(eps, dir_coef, out=tmp)
    out.add_(tmp)


def recorded_noise(out, xs_prev, xs, eps, sqrt_a, sqrt_b, sqrt_a_prev, dir_coef, sigma_den, tmp) -> None:
    """z = (xs_prev − μ(xs, ε)) / (sqrt(var)·eta): the noise that makes the DDIM step land on xs_prev."""
    ddim_mean(out, xs, eps, sqrt_a, sqrt_b, sqrt_a_prev, dir_coef, tmp)
    torch.sub(xs_prev, out, out=out)
    out.div_(sigma_den)


def ddim_step(x, eps, z, sqrt_a, sqrt_b, sqrt_a_prev, dir_coef, sigma, mean, tmp) -> None:
    """Target branch, in place: x ← μ(x, ε) + σ·z. With z None (eta = 0) no noise is added, as diffusers."""
    ddim_mean(mean, x, eps, sqrt_a, sqrt_b, sqrt_a_prev, dir_coef, tmp)
    if z is None:
        x.copy_(mean)
        return
    torch.mul(z, sigma, out=tmp)
    torch.add(mean, tmp, out=x)
