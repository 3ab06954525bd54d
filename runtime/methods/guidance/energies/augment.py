"""DiffAugment-style differentiable augmentations (colour, translation, resize, cutout) of a [0, 1] image batch.

Every parameter is drawn on the CPU from the caller's generator (then moved), so a seeded run, a CPU run and
a CUDA run see the same augmentations, and a finite-difference check can replay them exactly."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "resize", "cutout")


@dataclasses.dataclass(frozen=True)
class DiffAugment:
    """translation: largest shift as a fraction of the side; resize: zoom range; cutout: square side fraction."""

    policy: tuple[str, ...] = POLICIES
    translation: float = 0.125
    resize: tuple[float, float] = (0.8, 1.2)
    cutout: float = 0.5

    def __post_init__(self) -> None:
        unknown = [p for p in self.policy if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose from {POLICIES}")

    def __call__(self, x: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        """x (N, 3, H, W) in [0, 1] -> augmented (N, 3, H, W), each image with its own draws."""
        if "color" in self.policy:
            x = _color(x, rng)
        if "translation" in self.policy or "resize" in self.policy:
            x = self._affine(x, rng)
        if "cutout" in self.policy:
            x = _cutout(x, self.cutout, rng)
        return x

    def _affine(self, x: torch.Tensor, rng) -> torch.Tensor:
        """Zoom about the centre, then shift by whole pixels; outside the image is zero (as DiffAugment pads)."""
        n, _, h, w = x.shape
        lo, hi = self.resize if "resize" in self.policy else (1.0, 1.0)
        zoom = lo + (hi - lo) * _rand(rng, n)
        frac = self.translation if "translation" in self.policy else 0.0
        shift = [torch.randint(-int(s * frac + 0.5), int(s * frac + 0.5) + 1, (n,), generator=rng).float() * 2 / s
                 for s in (w, h)]  # whole pixels, in grid units (align_corners=False)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = 1 / zoom, 1 / zoom
        theta[:, 0, 2], theta[:, 1, 2] = -shift[0], -shift[1]
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rand(rng, n: int) -> torch.Tensor:
    return torch.rand(n, generator=rng)


def _color(x: torch.Tensor, rng) -> torch.Tensor:
    """Brightness ±0.5, saturation ×[0, 2], contrast ×[0.5, 1.5] (DiffAugment's rand_brightness/…)."""
    n = x.shape[0]
    view = (n, 1, 1, 1)
    brightness, saturation, contrast = (_rand(rng, n).view(view).to(x.device, x.dtype) for _ in range(3))
    x = x + (brightness - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (saturation * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (contrast + 0.5) + mean


def _cutout(x: torch.Tensor, ratio: float, rng) -> torch.Tensor:
    """Zero one square of ratio × the side per image, at a random centre (DiffAugment's rand_cutout)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=rng)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=rng)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    dy, dx = ys - cy + ch // 2, xs - cx + cw // 2  # (n, h, 1), (n, 1, w): position inside the square
    inside = (dy >= 0) & (dy < ch) & (dx >= 0) & (dx < cw)  # (n, h, w)
    return x * (~inside).unsqueeze(1).to(x.device, x.dtype)
