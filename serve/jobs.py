"""The three requests as checked, immutable jobs, and how each runs on the replica's Engine."""
from __future__ import annotations

import dataclasses
import secrets
import tempfile
from pathlib import Path
from typing import Any

from cyclediff.serve import fields as F
from cyclediff.serve import media
from cyclediff.serve.config import Limits
from cyclediff.serve.errors import RequestError
from cyclediff.serve.worker import CancelToken


@dataclasses.dataclass(frozen=True)
class EditJob:
    image: bytes  # the upload, decoded on the worker thread
    source_prompt: str
    prompts: tuple[str, ...]
    params: Any  # cyclediff.EditParams
    seed: int
    output_format: str
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class EncodeJob:
    image: bytes
    source_prompt: str
    params: Any  # cyclediff.EditParams (guidance_scale unused)
    seed: int
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class DecodeJob:
    code: bytes  # a LatentCode.save file
    prompts: tuple[str, ...]
    guidance_scale: float
    output_format: str
    timeout_s: float


def edit_job(raw: dict[str, Any], form: bool, limits: Limits) -> EditJob:
    F.check_known(raw, "edit")
    return EditJob(_file(raw, "image", form), F.text(raw, "source_prompt", limits), F.prompts(raw, limits),
                   params(raw, form, limits), F.seed(raw, form, secrets.randbelow(2**31)), F.output_format(raw),
                   F.timeout(raw, form, limits))


def encode_job(raw: dict[str, Any], form: bool, limits: Limits) -> EncodeJob:
    F.check_known(raw, "encode")
    return EncodeJob(_file(raw, "image", form), F.text(raw, "source_prompt", limits), params(raw, form, limits),
                     F.seed(raw, form, secrets.randbelow(2**31)), F.timeout(raw, form, limits))


def decode_job(raw: dict[str, Any], form: bool, limits: Limits) -> DecodeJob:
    F.check_known(raw, "decode")
    scale = F.number(raw, "guidance_scale", 7.5, form)
    return DecodeJob(_file(raw, "code", form), F.prompts(raw, limits), scale, F.output_format(raw),
                     F.timeout(raw, form, limits))


def params(raw: dict[str, Any], form: bool, limits: Limits):
    """EditParams with the Engine's own defaults and bounds (its error names the field), plus --max-steps."""
    from cyclediff import EditParams

    defaults = EditParams()
    values = {name: F.number(raw, name, getattr(defaults, name), form) for name in F.SETTINGS}
    if values["num_inference_steps"] > limits.max_steps:
        raise RequestError(422, "num_inference_steps", f"num_inference_steps must be <= {limits.max_steps} (the "
                                                       f"service's --max-steps), got {values['num_inference_steps']}")
    try:
        return EditParams(**values)
    except ValueError as err:
        raise RequestError(422, field_named(str(err)), str(err)) from None


def field_named(message: str) -> str | None:
    """The request field an Engine error message is about (they start with the argument's name)."""
    first = message.split(" ", 1)[0]
    known = {name for names in F.ENDPOINT_FIELDS.values() for name in names}
    return first if first in known else None


def _file(raw: dict[str, Any], name: str, form: bool) -> bytes:
    value = raw.get(name)
    if value is None:
        what = "an image file (PNG, JPEG, WebP)" if name == "image" else "a latent code file from /v1/encode"
        raise RequestError(422, name, f"{name} is required: {what}, as a multipart file or base64 in JSON")
    if isinstance(value, bytes):
        return value
    return media.from_base64(name, value)


# ---- running a job on the Engine (worker thread) ----------------------------------------------------------------

def run_edit(engine, job: EditJob, token: CancelToken, limits: Limits, side_multiple: int) -> list:
    """One prompt: exactly Engine.edit. Several: one shared encoding decoded per prompt (as cyclediff-run)."""
    import torch

    image = media.read_image(job.image, limits, side_multiple)
    p, kind = job.params, _output_type(job.output_format)
    generator = torch.Generator().manual_seed(job.seed)
    if len(job.prompts) == 1:
        return _images(engine.edit(job.prompts[0], job.source_prompt, image, strength=p.strength,
                                   num_inference_steps=p.num_inference_steps, guidance_scale=p.guidance_scale,
                                   source_guidance_scale=p.source_guidance_scale, eta=p.eta, generator=generator,
                                   output_type=kind, callback=token.check))
    # As CycleDiffusionPipeline: with guidance_scale <= 1 the source branch runs unguided.
    source_scale = p.source_guidance_scale if p.guidance_scale > 1 else 1.0
    code = engine.encode(image, job.source_prompt, strength=p.strength, num_inference_steps=p.num_inference_steps,
                         source_guidance_scale=source_scale, eta=p.eta, generator=generator)
    out = []
    for prompt in job.prompts:
        token.check()
        out += _images(engine.decode(code, prompt, p.guidance_scale, kind, callback=token.check))
    return out


def run_encode(engine, job: EncodeJob, token: CancelToken, limits: Limits, side_multiple: int) -> bytes:
    import torch

    image = media.read_image(job.image, limits, side_multiple)
    p = job.params
    token.check()
    code = engine.encode(image, job.source_prompt, strength=p.strength, num_inference_steps=p.num_inference_steps,
                         source_guidance_scale=p.source_guidance_scale, eta=p.eta,
                         generator=torch.Generator().manual_seed(job.seed))
    with tempfile.TemporaryDirectory(prefix="cyclediff-code-") as tmp:
        path = Path(tmp) / "code.safetensors"
        code.save(path)
        return path.read_bytes()


def run_decode(engine, job: DecodeJob, token: CancelToken) -> list:
    code = read_code(job.code)
    if code.batch != 1:
        raise RequestError(422, "code", f"the code holds {code.batch} images; the service decodes codes of one "
                                        "image (from /v1/encode)")
    out = []
    for prompt in job.prompts:
        token.check()
        out += _images(engine.decode(code, prompt, job.guidance_scale, _output_type(job.output_format),
                                     callback=token.check))
    return out


def read_code(data: bytes):
    from cyclediff import LatentCode, LatentCodeError

    with tempfile.TemporaryDirectory(prefix="cyclediff-code-") as tmp:
        path = Path(tmp) / "code.safetensors"
        path.write_bytes(data)
        try:
            return LatentCode.load(path)
        except (LatentCodeError, ValueError, KeyError, TypeError) as err:
            message = str(err).replace(str(path), "code")
            raise RequestError(422, "code", f"{message}; send a file written by /v1/encode or LatentCode.save") \
                from None


def _output_type(fmt: str) -> str:
    return "pil" if fmt == "png" else "np"


def _images(output) -> list:
    """PIL images, or (H, W, 3) float32 arrays for output_format npy."""
    return list(output.images)
