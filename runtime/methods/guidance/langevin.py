"""The Langevin sampler on a latent z = (x_T[, noises]): z ← z − (s/2)·∇E(z) + √s·ξ, ξ from the caller's generator.

Engine-free: it sees z as a tuple of tensors and the guided energy as a function, so it is tested alone."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable

import torch

from cyclediff.runtime.core.noise import NoiseSource
from cyclediff.runtime.methods.guidance.config import LangevinConfig

# zs -> (Σ λ_i E_i(G(z)) as (B,), {name: (B,) unweighted E_i}, pixels (B, 3, H, W) or None)
EnergyFn = Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]]
# (step, {"total": mean, "prior": mean, name: mean, ...}, pixels of G(z) or None) -> None
StepCallback = Callable[[int, dict[str, float], torch.Tensor | None], None]
# () -> a context held around each backward pass (the model gate's hold: gate.py)
Hold = Callable[[], contextlib.AbstractContextManager]


@dataclasses.dataclass(frozen=True)
class Latent:
    """The Gaussian parts of a code and the axis that indexes the batch in each: x_T (B, C, h, w) on axis 0,
    noises (K, B, C, h, w) on axis 1."""

    parts: tuple[torch.Tensor, ...]
    batch_axes: tuple[int, ...]

    def per_sample_sq(self, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """½‖z‖² per sample: (B,)."""
        return 0.5 * sum((p.movedim(a, 0).flatten(1) ** 2).sum(1) for p, a in zip(parts, self.batch_axes))

    def where(self, better: torch.Tensor, new: tuple, old: tuple) -> tuple[torch.Tensor, ...]:
        """Per sample: new where better (B,) is true, else old."""
        out = []
        for n, o, a in zip(new, old, self.batch_axes):
            shape = [1] * n.ndim
            shape[a] = -1
            out.append(torch.where(better.view(shape), n, o))
        return tuple(out)


@dataclasses.dataclass(frozen=True)
class LangevinResult:
    parts: tuple[torch.Tensor, ...]  # the returned z (last, or best by keep_best), detached
    history: tuple[dict[str, float], ...]  # per step, batch means of every energy at the z before the update
    best_step: tuple[int, ...] | None  # per sample: the step whose z was kept (n_steps = the final z)


def sample(latent: Latent, energy: EnergyFn | None, config: LangevinConfig, generator=None,
           callback: StepCallback | None = None, hold: Hold = contextlib.nullcontext) -> LangevinResult:
    """Run config.n_steps Langevin updates from latent.parts. energy None: the prior alone (λ = 0).
    hold: entered around each backward pass (its models' recomputations run inside it)."""
    z = tuple(p.detach() for p in latent.parts)
    noise = NoiseSource(generator, 1, z[0].device)
    best = _Best(config.keep_best) if config.keep_best is not None else None
    history = []
    for step in range(config.n_steps):
        record, metric, grads, pixels = evaluate(latent, energy, z, config.keep_best, hold=hold)
        history.append(record)
        if best is not None:
            best.offer(latent, step, metric, z)
        if callback is not None:
            callback(step, record, pixels)
        z = _update(z, grads, config, noise)
    if best is not None:
        with torch.no_grad():
            best.offer(latent, config.n_steps, evaluate(latent, energy, z, config.keep_best, grad=False)[1], z)
        return LangevinResult(best.z, tuple(history), tuple(best.step.tolist()))
    return LangevinResult(z, tuple(history), None)


def evaluate(latent: Latent, energy: EnergyFn | None, z, keep_best: str | None = None, grad: bool = True,
             hold: Hold = contextlib.nullcontext):
    """E(z) = guided + prior per sample -> (batch means by name, keep_best's (B,) values or None, ∇_z E per
    part (None without grad), pixels of G(z) or None). hold: entered around the backward pass."""
    zs = tuple(p.detach().requires_grad_(grad) for p in z)
    with torch.enable_grad() if grad else torch.no_grad():
        guided, parts, pixels = energy(zs) if energy is not None else (0.0, {}, None)
        prior = latent.per_sample_sq(zs)
        total = prior + guided
        grads = None
        if grad:
            with hold():
                grads = torch.autograd.grad(total.sum(), zs)
    values = {"total": total.detach(), "prior": prior.detach(), **{k: v.detach() for k, v in parts.items()}}
    record = {k: float(v.mean()) for k, v in values.items()}
    metric = values[keep_best] if keep_best is not None else None
    return record, metric, grads, None if pixels is None else pixels.detach()


def _update(z, grads, config: LangevinConfig, noise: NoiseSource) -> tuple[torch.Tensor, ...]:
    """z − (s/2)·g + noise_scale·√s·ξ; ξ drawn part by part, in order, from the caller's generator."""
    s = config.step_size
    out = []
    for p, g in zip(z, grads):
        p = p - (s / 2) * g
        if config.noise_scale > 0:
            p = p + (config.noise_scale * math.sqrt(s)) * noise.randn_into(torch.empty_like(p))
        out.append(p)
    return tuple(out)


class _Best:
    """The lowest value of one energy seen so far, per sample, and the z that had it."""

    def __init__(self, name: str):
        self.name = name
        self.value: torch.Tensor | None = None
        self.z: tuple[torch.Tensor, ...] = ()
        self.step: torch.Tensor | None = None

    def offer(self, latent: Latent, step: int, metric: torch.Tensor, z) -> None:
        if self.value is None:
            self.value, self.z = metric, z
            self.step = torch.full_like(metric, step, dtype=torch.long)
            return
        better = metric < self.value
        self.z = latent.where(better, z, self.z)
        self.value = torch.where(better, metric, self.value)
        self.step = torch.where(better, torch.full_like(self.step, step), self.step)
