"""LangevinConfig: the sampler's settings, with the unified-generative-zoo repository's defaults."""
from __future__ import annotations

import dataclasses

from cyclediff.runtime.core.checks import check_number


class GuidanceError(ValueError):
    """Guidance input that cannot be served (bad setting, energy, start code or backend); the message says why.
    A bad setting's error has .field (its LangevinConfig name)."""


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
        check_number("step_size", self.step_size, low=0, strict=True, error=GuidanceError)
        check_number("n_steps", self.n_steps, integer=True, low=0, error=GuidanceError)
        if self.guide_steps is not None:
            check_number("guide_steps", self.guide_steps, integer=True, low=1, error=GuidanceError)
        check_number("noise_scale", self.noise_scale, low=0, error=GuidanceError)
        if self.keep_best is not None and not isinstance(self.keep_best, str):
            raise GuidanceError(f"keep_best must be an energy name, 'total' or None, got {self.keep_best!r}")


def make_config(config: LangevinConfig | None, overrides: dict) -> LangevinConfig:
    """config (default LangevinConfig()) with keyword overrides; an unknown name is a GuidanceError."""
    if config is not None and not isinstance(config, LangevinConfig):
        raise GuidanceError(f"config must be a LangevinConfig, got {type(config).__name__}")
    known = {f.name for f in dataclasses.fields(LangevinConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise GuidanceError(f"unknown guidance setting(s) {unknown}; LangevinConfig has {sorted(known)}")
    return dataclasses.replace(config or LangevinConfig(), **overrides)
