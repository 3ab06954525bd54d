"""check_number: the one numeric-argument check of the project. A real number (never a bool), finite, an integer
when asked, at least `low` when given; every entry point words its refusal the same way. No torch here."""
from __future__ import annotations

import math
from typing import Any


def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
                 error: type[Exception] = ValueError) -> None:
    """Raises error("{name} must be {an integer | a finite number}[ >= low], got {value!r}")."""
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float)) \
        and (integer or math.isfinite(value)) and (low is None or value >= low)
    if not ok:
        what = "an integer" if integer else "a finite number"
        bound = "" if low is None else f" >= {low:g}"
        raise error(f"{name} must be {what}{bound}, got {value!r}")
