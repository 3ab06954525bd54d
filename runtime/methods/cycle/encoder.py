"""The DPM-Encoder: clean latents x0 -> LatentCode (x_T, z_t …), with every source UNet call batched.

The source trajectory is sampled from the posterior q(x_{t-1} | x_t, x0), which needs no UNet. So the
trajectory is drawn first (cheap, sequential, in the reference's random-draw order), and then the K·B
(·2 with guidance) UNet evaluations that record the noise run as a few large batches.
"""
from __future__ import annotations

import dataclasses

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core import ddim
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.noise import NoiseSource
from cyclediff.runtime.core.schedule import StepTable


@dataclasses.dataclass(frozen=True)
class SourceText:
    """Source-branch conditioning. cond: (B, 77, D). uncond: (1, 77, D) or None when unguided."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    guidance_scale: float


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1, 1)  # (K,) -> (K, 1, 1, 1, 1): one coefficient per step, broadcast


class DpmEncoder:
    """unet: the dispatcher's runner (on CUDA it captures each chunk shape as a graph, as every UNet call)."""

    def __init__(self, unet: ModelRunner, pool: BufferPool, max_batch: int, progress=None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.unet = unet
        self.pool = pool
        self.max_batch = max_batch
        self.progress = progress

    def noised(self, x0: torch.Tensor, table: StepTable, noise: NoiseSource) -> torch.Tensor:
        """x_T = sqrt(ᾱ_t0)·x0 + sqrt(1−ᾱ_t0)·n0 (DDIMScheduler.add_noise), drawing n0 (B, C, h, w)."""
        n0 = noise.randn_into(self.pool.get("enc.n0", tuple(x0.shape)))
        a = table.a_t0.to(x0.device)
        return a ** 0.5 * x0 + (1 - a) ** 0.5 * n0

    def trajectory(self, x0: torch.Tensor, x_T: torch.Tensor, table: StepTable, noise: NoiseSource) -> torch.Tensor:
        """(K+1, B, C, h, w): xs_0 = x_T, xs_{i+1} ~ q(· | xs_i, x0); xs_{i+1} = x0 where prev ≤ 0 (no draw)."""
        k = table.num_steps
        xs = self.pool.get("enc.xs", (k + 1, *x0.shape))
        n, tmp = self.pool.get("enc.n", tuple(x0.shape)), self.pool.get("enc.tmp", tuple(x0.shape))
        c = table.coefficients(x0.device)
        xs[0].copy_(x_T)
        for i in range(k):
            if not table.draws[i]:
                xs[i + 1].copy_(x0)
                continue
            noise.randn_into(n)
            ddim.posterior_step(xs[i + 1], xs[i], x0, c["sqrt_a"][i], c["sqrt_b"][i], c["sqrt_a_prev"][i],
                                c["dir_coef"][i], c["sigma"][i], n, tmp)
        return xs

    def source_eps(self, xs: torch.Tensor, table: StepTable, text: SourceText) -> torch.Tensor:
        """ε_src for every (step, item): (K, B, C, h, w), from ceil(K·B·g / max_batch) UNet calls."""
        k, b = table.num_steps, xs.shape[1]
        groups = 2 if text.uncond is not None else 1  # per (step, item): [uncond, cond]
        flat = self._unet_batched(xs[:k], table.timesteps.to(torch.float32), text, groups)
        eps = self.pool.get("enc.eps", (k, *xs.shape[1:]))
        if groups == 1:
            eps.copy_(flat.view(eps.shape))
            return eps
        pairs = flat.view(k, b, 2, *xs.shape[2:])
        ddim.guide(eps, pairs[:, :, 0], pairs[:, :, 1], text.guidance_scale, self.pool.get("enc.gtmp", eps.shape))
        return eps

    def _unet_batched(self, xs: torch.Tensor, timesteps: torch.Tensor, text: SourceText, groups: int):
        """Run the UNet over N = K·B·groups samples in chunks of at most max_batch. Returns (N, C, h, w)."""
        k, b, lat = xs.shape[0], xs.shape[1], xs.shape[2:]
        n = k * b * groups
        out = self.pool.get("enc.unet_out_all", (n, *lat))
        chunk = min(self.max_batch, n)
        spec_emb = text.cond.shape[1:]
        sample, t_buf = self.pool.get("enc.sample", (chunk, *lat)), self.pool.get("enc.t", (chunk,))
        emb = self.pool.get("enc.emb", (chunk, *spec_emb))
        res = self.pool.get("enc.res", (chunk, *lat))
        # The timesteps go to the device once; each chunk's (m,) column is one gather by step index, not one
        # host-to-device copy per sample. step_of: (N,) the step of each flat sample.
        ts = timesteps.to(device=t_buf.device, dtype=t_buf.dtype)
        step_of = torch.arange(n, device=t_buf.device).div_(b * groups, rounding_mode="floor")
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            torch.index_select(ts, 0, step_of[start: start + m], out=t_buf[:m])
            for j in range(m):  # sample j of the flat order (step, item, group)
                step, rest = divmod(start + j, b * groups)
                item, group = divmod(rest, groups)
                sample[j].copy_(xs[step, item])
                emb[j].copy_(text.uncond[0] if group == 0 and groups == 2 else text.cond[item])
            out[start: start + m].copy_(self._chunk(sample[:m], t_buf[:m], emb[:m], res[:m]))
            if self.progress is not None:
                self.progress.update(m)
        return out

    def _chunk(self, sample, timestep, emb, res) -> torch.Tensor:
        """One UNet call on a chunk (m, C, h, w)."""
        self.unet({"sample": sample, "timestep": timestep, "encoder_hidden_states": emb}, {"noise_pred": res})
        return res

    def record(self, xs: torch.Tensor, eps: torch.Tensor, table: StepTable) -> torch.Tensor:
        """z (K, B, C, h, w) for all steps at once."""
        k = table.num_steps
        z = self.pool.get("enc.z", tuple(eps.shape))
        tmp = self.pool.get("enc.ztmp", tuple(eps.shape))
        c = table.coefficients(xs.device)
        ddim.recorded_noise(z, xs[1: k + 1], xs[:k], eps, _col(c["sqrt_a"]), _col(c["sqrt_b"]),
                            _col(c["sqrt_a_prev"]), _col(c["dir_coef"]), _col(c["sigma_den"]), tmp)
        return z
