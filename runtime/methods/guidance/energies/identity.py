"""IdentityEnergy: 1 − cos(f(x), f(reference)) for a user-given feature network f (StyleCLIP's ID loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cyclediff.runtime.methods.guidance.energies.base import Energy


class IdentityEnergy(Energy):
    """features(x) -> (B, F); reference: (1, 3, H', W') pixels in [-1, 1], resized to x's size when they differ.

    The reference's features are computed once per image size, without gradient."""

    def __init__(self, features: torch.nn.Module, reference: torch.Tensor, weight: float = 1.0,
                 name: str = "identity"):
        super().__init__(weight)
        if not isinstance(reference, torch.Tensor) or reference.ndim != 4 or reference.shape[:2] != (1, 3):
            shape = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
            raise ValueError(f"IdentityEnergy: reference must be a (1, 3, H, W) tensor in [-1, 1], got {shape}")
        self.features, self.reference, self.name = features, reference, name
        self._target: dict[tuple, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        feats = self.features(x).flatten(1)  # (B, F)
        return 1 - F.cosine_similarity(feats, self._reference_features(x), dim=1)

    def _reference_features(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape[-2:]), x.dtype, x.device)
        if key not in self._target:
            ref = self.reference.to(x.device, x.dtype)
            if ref.shape[-2:] != x.shape[-2:]:
                ref = F.interpolate(ref, size=x.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
            with torch.no_grad():
                self._target[key] = self.features(ref).flatten(1)  # (1, F)
        return self._target[key]
