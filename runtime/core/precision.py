"""fp16 policy at run time: latents and scheduler math stay fp32; an fp16 VAE that overflows is re-run in fp32.

The SD VAE in fp16 can overflow to inf/NaN on some inputs. Checking costs one host sync per VAE call (not per
denoising step), so every fp16 VAE result is checked and, if any value is not finite, computed again in fp32.
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping

import torch

from cyclediff.engine.base import ModelRunner

log = logging.getLogger(__name__)


class OverflowGuard:
    """Counts fp32 re-runs of one model and warns on the first only (a recurring overflow is not news)."""

    def __init__(self, what: str):
        self.what = what
        self.fallbacks = 0

    def note(self) -> None:
        if self.fallbacks == 0:
            log.warning("fp16/bf16 %s produced non-finite values (overflow); re-running it in fp32 (warned once)",
                        self.what)
        self.fallbacks += 1


DECODE_GUARD, ENCODE_GUARD = OverflowGuard("VAE decoder"), OverflowGuard("VAE encoder")


def all_finite(*tensors: torch.Tensor) -> bool:
    """One host sync for all tensors together."""
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def run_vae_decode_guarded(run_fp16: Callable[[torch.Tensor], torch.Tensor],
                           run_fp32: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
                           guard: OverflowGuard = DECODE_GUARD) -> torch.Tensor:
    """latents (B, C, h, w) -> image (B, 3, H, W): fp16 result if finite, else the fp32 one."""
    image = run_fp16(latents)
    if all_finite(image):
        return image
    guard.note()
    return run_fp32(latents)


def run_vae_encode_guarded(run_fp16: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                           run_fp32: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                           images: torch.Tensor,
                           guard: OverflowGuard = ENCODE_GUARD) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 3, H, W) -> (mean, std) (B, C, h, w) each: fp16 result if finite, else the fp32 one."""
    mean, std = run_fp16(images)
    if all_finite(mean, std):
        return mean, std
    guard.note()
    return run_fp32(images)


class GuardedRunner(ModelRunner):
    """The same policy as a ModelRunner: fp16 into the caller's outputs, overwritten by fp32 on overflow.

    `fp32` may be a factory so the fallback engine is only loaded the first time it is needed.
    """

    def __init__(self, fp16: ModelRunner, fp32: ModelRunner | Callable[[], ModelRunner], guard: OverflowGuard):
        super().__init__(fp16.spec)
        self.fp16, self._fp32, self.guard = fp16, fp32, guard

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.fp16(feeds, outputs)
        if all_finite(*outputs.values()):
            return
        self.guard.note()
        self.fallback()(feeds, outputs)

    def fallback(self) -> ModelRunner:
        if not isinstance(self._fp32, ModelRunner):
            self._fp32 = self._fp32()
        return self._fp32
