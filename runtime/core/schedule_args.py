"""The scalar schedule arguments every entry point shares, checked without torch (EditParams' presets are built
at import, and `cyclediff-run --help` must not pay for importing torch)."""
from __future__ import annotations

import math

from cyclediff.runtime.core.checks import check_number


def check_schedule_args(num_inference_steps: int, strength: float, eta: float) -> None:
    """The scalar arguments every entry point shares; a clear error for each bad one."""
    check_number("num_inference_steps", num_inference_steps, integer=True, low=1)
    if not isinstance(strength, (int, float)) or not math.isfinite(strength) or not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    if not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
