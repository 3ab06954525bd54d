"""The scalar schedule arguments every entry point shares, checked without torch (EditParams' presets are built
at import, and `cyclediff-run --help` must not pay for importing torch)."""
from __future__ import annotations

import math


def check_schedule_args(num_inference_steps: int, strength: float, eta: float) -> None:
    """The scalar arguments every entry point shares; a clear error for each bad one."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    if not isinstance(strength, (int, float)) or not math.isfinite(strength) or not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    if not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
