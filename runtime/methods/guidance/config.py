"""LangevinConfig: the sampler's settings, with the unified-generative-zoo repository's defaults."""
from __future__ import annotations

import dataclasses
import math


class GuidanceError(ValueError):
    """Guidance input that cannot be served (bad setting, energy, start code or backend); the message says why."""


@dataclasses.dataclass(frozen=True)
class LangevinConfig:
    """z ← z − (s/2)·∇_z E(z) + noise_scale·√s·ξ, `n_steps` times, E(z) = Σ λ_i E_i(G(z)) + ½‖z‖².

    guide_steps: DDIM steps of the short sampler G used inside the loop (None: the final decode's own
    schedule). The final image is always decoded with the full schedule, as the paper does (5–10 inside,
    hundreds outside). keep_best: an energy's name (or "total") whose lowest value picks the returned z;
    None returns the last z. noise_scale 0 turns Langevin into plain gradient descent on E.
    checkpoint: recompute each sampler step in the backward pass, so memory does not grow with guide_steps.
    """

    step_size: float = 0.05
    n_steps: int = 200
    guide_steps: int | None = 10
    noise_scale: float = 1.0
    keep_best: str | None = None
    checkpoint: bool = True

    def __post_init__(self) -> None:
        if not _finite(self.step_size) or self.step_size <= 0:
            raise GuidanceError(f"step_size must be a finite number > 0, got {self.step_size!r}")
        if not _count(self.n_steps, 0):
            raise GuidanceError(f"n_steps must be an integer >= 0, got {self.n_steps!r}")
        if self.guide_steps is not None and not _count(self.guide_steps, 1):
            raise GuidanceError(f"guide_steps must be an integer >= 1 or None, got {self.guide_steps!r}")
        if not _finite(self.noise_scale) or self.noise_scale < 0:
            raise GuidanceError(f"noise_scale must be a finite number >= 0, got {self.noise_scale!r}")
        if self.keep_best is not None and not isinstance(self.keep_best, str):
            raise GuidanceError(f"keep_best must be an energy name, 'total' or None, got {self.keep_best!r}")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _count(x, low: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def make_config(config: LangevinConfig | None, overrides: dict) -> LangevinConfig:
    """config (default LangevinConfig()) with keyword overrides; an unknown name is a GuidanceError."""
    if config is not None and not isinstance(config, LangevinConfig):
        raise GuidanceError(f"config must be a LangevinConfig, got {type(config).__name__}")
    known = {f.name for f in dataclasses.fields(LangevinConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise GuidanceError(f"unknown guidance setting(s) {unknown}; LangevinConfig has {sorted(known)}")
    return dataclasses.replace(config or LangevinConfig(), **overrides)
