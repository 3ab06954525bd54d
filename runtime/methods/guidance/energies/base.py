"""Energy: the interface every guidance energy implements, and the checks on a list of them."""
from __future__ import annotations

import abc

import torch

from cyclediff.runtime.core.checks import check_number
from cyclediff.runtime.methods.guidance.config import GuidanceError


class Energy(abc.ABC):
    """E(x): (B, 3, H, W) pixels in [-1, 1] -> (B,) energies, differentiable in x. λ = `weight` (>= 0).

    `rng` supplies any randomness (augmentations), so that a seeded run and a finite-difference check see
    the same draws."""

    name: str = "energy"

    def __init__(self, weight: float):
        check_number(f"{type(self).__name__}: weight", weight, low=0, error=GuidanceError)
        self.weight = float(weight)

    @abc.abstractmethod
    def __call__(self, x: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        ...


def check_energies(energies) -> tuple[Energy, ...]:
    """A tuple of Energy objects with distinct names, or a GuidanceError naming the bad one."""
    from cyclediff.runtime.methods.guidance.energies import KNOWN

    energies = tuple(energies or ())
    for e in energies:
        if not isinstance(e, Energy):
            known = ", ".join(k.__name__ for k in KNOWN)
            raise GuidanceError(f"unknown energy {e!r}: pass instances of {known} (cyclediff.runtime.methods."
                                "guidance.energies) or of your own subclass of Energy")
    names = [e.name for e in energies]
    if len(set(names)) != len(names):
        raise GuidanceError(f"energy names {names} repeat; give each energy its own name= (keep_best and the "
                            "progress bar refer to energies by name)")
    return energies
