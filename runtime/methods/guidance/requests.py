"""GuideRequest: one latent-space guidance call (Engine.guide's arguments), checked once at construction by the
project's one set of rules (runtime/core/checks.py); the start code's fit to this export is checked when it runs."""
from __future__ import annotations

import dataclasses
from typing import Any

from cyclediff.runtime.core.checks import check_number, check_optional_int, check_output_args
from cyclediff.runtime.methods.guidance.config import GuidanceError, LangevinConfig
from cyclediff.runtime.methods.guidance.energies import check_energies


@dataclasses.dataclass(frozen=True)
class GuideRequest:
    """Langevin dynamics on z from `start` (a LatentCode) or from the prior (z ~ N(0, I) at height x width),
    then the full decode of z with `prompt`. energies: a tuple of Energy objects (a list is taken as one)."""

    prompt: Any
    energies: tuple = ()
    start: Any = None
    config: LangevinConfig = LangevinConfig()
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    eta: float = 0.0
    generator: Any = None
    output_type: str = "pil"
    callback: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.config, LangevinConfig):
            raise GuidanceError(f"config must be a LangevinConfig, got {type(self.config).__name__}")
        object.__setattr__(self, "energies", check_energies(self.energies))  # frozen: normalized once, here
        check_number("guidance_scale", self.guidance_scale)
        check_output_args(self.output_type, 1)
        check_number("num_inference_steps", self.num_inference_steps, integer=True, low=1)
        check_number("eta", self.eta, low=0)
        check_optional_int("height", self.height, 1)
        check_optional_int("width", self.width, 1)
        names = {e.name for e in self.energies} | {"total", "prior"}
        if self.config.keep_best is not None and self.config.keep_best not in names:
            raise GuidanceError(f"keep_best={self.config.keep_best!r} names no energy; choose one of "
                                f"{sorted(names)}")
