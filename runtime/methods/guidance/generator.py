"""G(z): the decoder's DDIM loop with injected noises + the VAE decoder, differentiable in z (torch modules).

Same expression tree as runtime/methods/cycle/decoder.py + core/ddim.py (out-of-place, so autograd can follow),
so on the torch backend G(z) equals the engine's ordinary decode of the same code to the last bit.
"""
from __future__ import annotations

import dataclasses

import torch
from torch.utils.checkpoint import checkpoint

from cyclediff.runtime.core.schedule import COEFFICIENTS, StepTable


@dataclasses.dataclass(frozen=True)
class GuideText:
    """cond: (B, 77, D); uncond: (1, 77, D) or None (guidance_scale <= 1), as the decoder's TargetText."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    guidance_scale: float


class DifferentiableDecoder(torch.nn.Module):
    """x_T (B, C, h, w), noises (K, B, C, h, w) or None -> pixels (B, 3, H, W) in about [-1, 1] (VAE output).

    unet(sample, t, emb) and vae_decoder(latent) are the export wrappers (cyclediff.export.models), in `dtype`.
    With `checkpoint` each sampler step is recomputed during backward: only each step's input x is kept."""

    def __init__(self, unet, vae_decoder, table: StepTable, text: GuideText, scaling_factor: float,
                 dtype: torch.dtype = torch.float32, checkpoint: bool = True):
        super().__init__()
        self.unet, self.vae_decoder = unet, vae_decoder
        self.timesteps = [float(t) for t in table.timesteps]
        self.coefs = {n: getattr(table, n).to(dtype) for n in COEFFICIENTS}  # (K,) each
        self.text, self.scaling_factor, self.checkpoint = text, scaling_factor, checkpoint
        self.dtype = dtype

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def latents(self, x_T: torch.Tensor, noises: torch.Tensor | None) -> torch.Tensor:
        """The DDIM loop alone: (B, C, h, w) final latents."""
        if noises is not None and noises.shape[0] != self.num_steps:
            raise ValueError(f"{noises.shape[0]} noises for a {self.num_steps}-step sampler")
        emb = self._embeddings(x_T.shape[0], x_T.device)
        coefs = {n: c.to(x_T.device) for n, c in self.coefs.items()}
        x = x_T
        for i in range(self.num_steps):
            z = None if noises is None else noises[i]
            if self.checkpoint and torch.is_grad_enabled():
                # No randomness inside a step (eval mode, noises are inputs): no RNG state to save and restore.
                x = checkpoint(self._step, x, z, emb, coefs, i, use_reentrant=False, preserve_rng_state=False)
            else:
                x = self._step(x, z, emb, coefs, i)
        return x

    def forward(self, x_T: torch.Tensor, noises: torch.Tensor | None) -> torch.Tensor:
        return self.vae_decoder(self.latents(x_T, noises) / self.scaling_factor)

    def _embeddings(self, b: int, device: torch.device) -> torch.Tensor:
        """Batch layout as diffusers' and the decoder's: [uncond × B, cond × B] with guidance, [cond × B] without."""
        cond = self.text.cond.to(device, self.dtype)
        if self.text.uncond is None:
            return cond
        return torch.cat([self.text.uncond.to(device, self.dtype).expand(b, -1, -1), cond])

    def _step(self, x, z, emb, c, i: int) -> torch.Tensor:
        b, g = x.shape[0], emb.shape[0] // x.shape[0]
        sample = torch.cat([x] * g) if g > 1 else x
        t = torch.full((g * b,), self.timesteps[i], dtype=self.dtype, device=x.device)
        pred = self.unet(sample, t, emb)
        # ddim.guide: eps = u + scale·(c − u), in that operation order
        eps = pred[:b] + (pred[b:] - pred[:b]) * self.text.guidance_scale if g == 2 else pred
        # ddim.ddim_mean: x̂0 = (x − sqrt(1−ᾱ)·ε) / sqrt(ᾱ); μ = sqrt(ᾱ_prev)·x̂0 + dir·ε
        x0 = (x - eps * c["sqrt_b"][i]) / c["sqrt_a"][i]
        mean = x0 * c["sqrt_a_prev"][i] + eps * c["dir_coef"][i]
        return mean if z is None else mean + z * c["sigma"][i]
