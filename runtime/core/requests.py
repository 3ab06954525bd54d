"""The CycleDiffusion requests: what one call asks for, checked once, at construction, by the one set of rules.

`Engine.encode`, `Engine.decode` and `Engine.edit` only build one of these (their arguments are diffusers'); the CLIs,
`--jobs`, the HTTP service and `cyclediff-eval` build the same requests from their own inputs, so a bad value gets
the same words (and `.field`) at every front door. What needs the loaded export (image sizes, the code's digest,
clip_skip's depth, the memory plan) is checked when the request runs. Images, generators, callbacks and tensors
are held by reference: a request is frozen, its inputs are the caller's."""
from __future__ import annotations

import dataclasses
from typing import Any

from cyclediff.runtime.core.checks import (
    InvalidArgument,
    WrongType,
    check_edit_steps,
    check_no_attention_kwargs,
    check_number,
    check_optional_int,
    check_output_args,
    check_prompts,
)
from cyclediff.runtime.core.config import EditParams


def _check_prompt(prompt: Any, prompt_embeds: Any) -> None:
    """diffusers: prompt_embeds replace the prompt; without them the prompt is a string or a list of them."""
    if prompt_embeds is None:
        check_prompts("prompt", prompt)


@dataclasses.dataclass(frozen=True)
class EncodeRequest:
    """The DPM-Encoder on image(s) with the source prompt(s). params.guidance_scale is unused here: the source
    guidance the encoder runs is params.source_scale's (so an EditRequest's encode half keeps the edit's rule)."""

    image: Any
    source_prompt: Any
    params: EditParams = EditParams()
    generator: Any = None
    num_images_per_prompt: int = 1
    clip_skip: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.params, EditParams):
            raise WrongType("params", f"must be an EditParams, got {type(self.params).__name__}")
        check_edit_steps(self.params.num_inference_steps, self.params.strength)
        check_prompts("source_prompt", self.source_prompt)
        check_number("num_images_per_prompt", self.num_images_per_prompt, integer=True, low=1)
        check_optional_int("clip_skip", self.clip_skip, 0)
        if self.image is None:
            raise InvalidArgument("image", "is required: pass a PIL image, numpy array or torch tensor")

    @property
    def source_guided(self) -> bool:
        return self.params.source_scale != 1


@dataclasses.dataclass(frozen=True)
class DecodeRequest:
    """A saved or fresh LatentCode decoded with target prompt(s) (or prompt_embeds)."""

    code: Any
    prompt: Any = None
    guidance_scale: float = 7.5
    output_type: str = "pil"
    prompt_embeds: Any = None
    clip_skip: int | None = None
    callback: Any = None
    callback_steps: int = 1

    def __post_init__(self) -> None:
        from cyclediff.runtime.core.latent_code import LatentCode

        if not isinstance(self.code, LatentCode):
            raise WrongType("code", f"must be a LatentCode (from Engine.encode or LatentCode.load), got "
                                          f"{type(self.code).__name__}")
        check_number("guidance_scale", self.guidance_scale)
        check_output_args(self.output_type, self.callback_steps)
        check_optional_int("clip_skip", self.clip_skip, 0)
        if self.prompt_embeds is None and self.prompt is not None:
            check_prompts("prompt", self.prompt)


@dataclasses.dataclass(frozen=True)
class EditRequest:
    """CycleDiffusionPipeline.__call__'s arguments: encode with the source prompt, decode with the target.

    one_encoding: `prompt` is a list of target prompts, each decoding ONE shared encoding of the image (one image
    per prompt: what the CLIs, `--jobs` and the service call "several prompts"); False is diffusers' batch rule
    (prompts, source prompts and images given once or n times each)."""

    prompt: Any
    source_prompt: Any
    image: Any
    params: EditParams = EditParams()
    generator: Any = None
    num_images_per_prompt: int = 1
    prompt_embeds: Any = None
    output_type: str = "pil"
    callback: Any = None
    callback_steps: int = 1
    clip_skip: int | None = None
    one_encoding: bool = False
    cross_attention_kwargs: Any = None

    def __post_init__(self) -> None:
        check_no_attention_kwargs(self.cross_attention_kwargs)
        _check_prompt(self.prompt, self.prompt_embeds)
        check_output_args(self.output_type, self.callback_steps)
        if self.one_encoding and self.prompt_embeds is not None:
            raise InvalidArgument("prompt_embeds", "cannot be used with one shared encoding per prompt list; "
                                                   "pass the prompts as text")
        self.encode_request()  # the encode half's own checks (image, source prompt, steps, ...)

    @property
    def prompts(self) -> tuple[str, ...]:
        """The target prompts as a tuple (one_encoding: one output image each)."""
        return check_prompts("prompt", self.prompt)

    @property
    def target_guided(self) -> bool:
        return self.params.guidance_scale > 1

    def encode_request(self) -> EncodeRequest:
        return EncodeRequest(self.image, self.source_prompt, self.params, self.generator, self.num_images_per_prompt,
                             self.clip_skip)

    def decode_request(self, code, prompt) -> DecodeRequest:
        return DecodeRequest(code, prompt, self.params.guidance_scale, self.output_type, None, self.clip_skip,
                             self.callback, self.callback_steps)
