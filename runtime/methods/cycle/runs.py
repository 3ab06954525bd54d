"""How each CycleDiffusion request runs on the core: one `core.call()` (a workspace, in flight) per request, the
encode half and the decode half(s) inside it (a decoder on another export: one call there for the decode half).
The rule "one image, several prompts, one shared encoding" lives here, for every front door."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cyclediff.runtime.core.batch import BatchPlan
from cyclediff.runtime.core.requests import DecodeRequest, EditRequest, EncodeRequest
from cyclediff.runtime.core.session import Core
from cyclediff.runtime.methods.cycle.method import CycleDiffusion


def run(core: Core, cycle: CycleDiffusion, request, output_type, decoder=None):
    """EncodeRequest -> LatentCode; DecodeRequest -> output_type(images); EditRequest -> output_type(images, None,
    the code it decoded). decoder: another Engine that decodes an EditRequest's code (two-model translation: the
    source prompt is encoded by this engine's text encoder, the targets by the decoder's), or None."""
    other = Decoding(core, cycle) if decoder is None else Decoding(decoder.core, decoder.cycle)
    if isinstance(request, EncodeRequest):
        prepared = core.prepare(request.image)
        plan = BatchPlan.make(request.source_prompt, request.source_prompt, prepared.tensor.shape[0],
                              request.num_images_per_prompt)
        with core.call() as pool:
            return _encode(cycle, pool, prepared, plan, request, target_guided=False)
    if isinstance(request, DecodeRequest):
        with core.call() as pool:
            return output_type(_decode(cycle, pool, request))
    if isinstance(request, EditRequest):
        if request.one_encoding and len(request.prompts) > 1:
            return output_type(*_one_encoding(core, cycle, request, other))
        if request.one_encoding:
            request = dataclasses.replace(request, prompt=request.prompts[0], one_encoding=False)
        return output_type(*_edit(core, cycle, request, other))
    raise TypeError(f"not a CycleDiffusion request: {type(request).__name__}")


@dataclasses.dataclass(frozen=True)
class Decoding:
    """Which export decodes an edit's code: the encoding one, or another one (runs its own workspace)."""

    core: Core
    cycle: CycleDiffusion

    def same_as(self, core: Core) -> bool:
        return self.core is core


def _encode(cycle: CycleDiffusion, pool, prepared, plan: BatchPlan, request: EncodeRequest, target_guided: bool):
    # The code records the source guidance the encoder ran (1 when the edit's guidance_scale <= 1).
    params = dataclasses.replace(request.params, source_guidance_scale=request.params.source_scale)
    return cycle.encode(pool, prepared, plan, params, request.generator, request.clip_skip, request.source_guided,
                        target_guided)


def _decode(cycle: CycleDiffusion, pool, r: DecodeRequest):
    return cycle.decode(pool, r.code, r.prompt, r.guidance_scale, r.output_type, r.prompt_embeds, r.clip_skip,
                        r.callback, r.callback_steps)


def _edit(core: Core, cycle: CycleDiffusion, request: EditRequest, decoding: Decoding):
    """diffusers' batch rule: B = n · num_images_per_prompt items, each encoded with its own generator draw."""
    prepared = core.prepare(request.image)
    plan = BatchPlan.make(request.prompt, request.source_prompt, prepared.tensor.shape[0],
                          request.num_images_per_prompt, request.prompt_embeds)
    targets = list(plan.target_prompts) if plan.target_prompts is not None else None
    embeds = request.prompt_embeds[list(plan.embeds_index)] if request.prompt_embeds is not None else None

    def decode(code, pool):
        decode = dataclasses.replace(request.decode_request(code, targets), prompt_embeds=embeds)
        return _decode(decoding.cycle, pool, decode), None, code

    return _encode_then(core, cycle, prepared, plan, request, decoding, decode)


def _one_encoding(core: Core, cycle: CycleDiffusion, request: EditRequest, decoding: Decoding):
    """One image encoded once, then decoded once per target prompt: images in prompt order."""
    prepared = core.prepare(request.image)
    if prepared.tensor.shape[0] != 1 or not isinstance(request.source_prompt, str):
        raise ValueError("one shared encoding takes one image and one source prompt; pass a list of target "
                         "prompts only")
    plan = BatchPlan.make(request.source_prompt, request.source_prompt, 1, request.num_images_per_prompt)

    def decode(code, pool):
        parts = [_decode(decoding.cycle, pool, request.decode_request(code, p)) for p in request.prompts]
        return _join(parts, request.output_type), None, code

    return _encode_then(core, cycle, prepared, plan, request, decoding, decode)


def _encode_then(core: Core, cycle: CycleDiffusion, prepared, plan: BatchPlan, request: EditRequest,
                 decoding: Decoding, decode):
    """Encode, then decode(code, pool): in one workspace on one export; on another export, the decode borrows a
    workspace of its own there after the encoder's is given back (one call never holds two)."""
    with core.call() as pool:
        code = _encode(cycle, pool, prepared, plan, request.encode_request(), request.target_guided)
        if decoding.same_as(core):
            return decode(code, pool)
    with decoding.core.call() as pool:
        return decode(code, pool)


def _join(parts: list, output_type: str):
    """Per-prompt outputs -> one output of the same type: a list of PIL images, or arrays/tensors on axis 0."""
    if output_type == "pil":
        return [image for part in parts for image in part]
    if output_type == "np":
        return np.concatenate(parts)
    return torch.cat(parts)
