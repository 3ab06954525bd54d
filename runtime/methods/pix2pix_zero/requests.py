"""The Pix2Pix-Zero requests (diffusers' StableDiffusionPix2PixZeroPipeline.invert and __call__ arguments), checked
once at construction by the project's one set of rules (runtime/core/checks.py); what needs the loaded export
(image size, embedding shapes, the code's digest, the backend) is checked when the request runs."""
from __future__ import annotations

import dataclasses
from typing import Any

from cyclediff.runtime.core.checks import (
    InvalidArgument,
    check_choice,
    check_no_attention_kwargs,
    check_number,
    check_optional_int,
    check_output_args,
)
from cyclediff.runtime.methods.pix2pix_zero.attention_guidance import TRAJECTORIES
from cyclediff.runtime.methods.pix2pix_zero.regularizer import RegularizerParams


def _check_common(guidance_scale: Any, output_type: Any, callback_steps: Any, cross_attention_kwargs: Any) -> None:
    check_number("guidance_scale", guidance_scale)
    check_output_args(output_type, callback_steps)
    check_no_attention_kwargs(cross_attention_kwargs)


@dataclasses.dataclass(frozen=True)
class InvertRequest:
    """Image -> InversionCode. output_type None: no decoded .images (the latents only)."""

    prompt: Any = None
    image: Any = None
    num_inference_steps: int = 50
    guidance_scale: float = 1.0
    generator: Any = None
    prompt_embeds: Any = None
    output_type: str | None = "pil"
    callback: Any = None
    callback_steps: int = 1
    regularizer: RegularizerParams = RegularizerParams()
    cross_attention_kwargs: Any = None

    def __post_init__(self) -> None:
        _check_common(self.guidance_scale, self.output_type or "latent", self.callback_steps,
                      self.cross_attention_kwargs)
        check_number("num_inference_steps", self.num_inference_steps, integer=True, low=1)
        if self.image is None:
            raise InvalidArgument("image", "is required: pass a PIL image, numpy array or torch tensor (or latents "
                                           "(B, 4, h, w))")


@dataclasses.dataclass(frozen=True)
class Pix2PixZeroRequest:
    """One image edited along source_embeds -> target_embeds, from latents (an InversionCode, a tensor, or None:
    a fresh N(0, I) draw). amount: cross_attention_guidance_amount (0: no guided step, any backend)."""

    prompt: Any = None
    source_embeds: Any = None
    target_embeds: Any = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: Any = None
    eta: float = 0.0
    generator: Any = None
    latents: Any = None
    prompt_embeds: Any = None
    negative_prompt_embeds: Any = None
    amount: float = 0.1
    output_type: str = "pil"
    callback: Any = None
    callback_steps: int = 1
    clip_skip: int | None = None
    trajectory: str = "lockstep"
    num_images_per_prompt: int = 1
    cross_attention_kwargs: Any = None

    def __post_init__(self) -> None:
        _check_common(self.guidance_scale, self.output_type, self.callback_steps, self.cross_attention_kwargs)
        check_number("num_inference_steps", self.num_inference_steps, integer=True, low=1)
        check_number("eta", self.eta, low=0)
        check_number("cross_attention_guidance_amount", self.amount, low=0)
        check_choice("trajectory", self.trajectory, TRAJECTORIES)
        if self.num_images_per_prompt != 1:
            raise InvalidArgument("num_images_per_prompt", f"must be 1: Pix2Pix-Zero edits one image per call, got "
                                                           f"{self.num_images_per_prompt!r}")
        check_optional_int("height", self.height, 1)
        check_optional_int("width", self.width, 1)
        check_optional_int("clip_skip", self.clip_skip, 0)
