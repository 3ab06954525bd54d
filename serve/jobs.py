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
    request: Any  # cyclediff EditRequest, one shared encoding per prompt list; .image: the upload's bytes
    seed: int
    output_format: str
    timeout_s: float
    decoder: bool = False  # decode with the replica's second export
    method: str = "cycle"  # or "pix2pix-zero" (serve/pix2pix_job.py)
    amount: float = 0.1  # pix2pix-zero's cross_attention_guidance_amount


@dataclasses.dataclass(frozen=True)
class EncodeJob:
    request: Any  # cyclediff EncodeRequest; .image: the upload's bytes, decoded on the worker thread
    seed: int
    timeout_s: float


@dataclasses.dataclass(frozen=True)
class DecodeJob:
    code: bytes  # a LatentCode.save file
    prompts: tuple[str, ...]
    guidance_scale: float
    output_format: str
    timeout_s: float
    decoder: bool = False


def edit_job(raw: dict[str, Any], form: bool, limits: Limits, decoder: bool = False, guided: bool = False) -> EditJob:
    """The request as the Engine's own EditRequest (its rules, its messages), bounded by the service's limits.
    decoder: whether the replica loads a second export (then decoder=true may ask for it); guided: whether it can
    run Pix2Pix-Zero's guided step (serve/pix2pix_job.py)."""
    from cyclediff.runtime.core.requests import EditRequest

    F.check_known(raw, "edit")
    image, source, prompts = _file(raw, "image", form), F.text(raw, "source_prompt", limits), F.prompts(raw, limits)
    fmt = F.output_format(raw)
    request = F.checked(lambda: EditRequest(list(prompts), source, image, params(raw, form, limits),
                                           output_type=_output_type(fmt), one_encoding=True))
    method, amount = F.method(raw), F.number(raw, "cross_attention_guidance_amount", 0.1, form)
    if method == "pix2pix-zero":
        _check_pix2pix(raw, amount, guided)
    return EditJob(request, F.seed(raw, form, secrets.randbelow(2**31)), fmt, F.timeout(raw, form, limits),
                   F.decoder(raw, decoder), method, amount)


def _check_pix2pix(raw: dict[str, Any], amount: float, guided: bool) -> None:
    if raw.get("decoder") not in (None, False, "false", "0"):
        raise RequestError(422, "decoder", "decoder=true decodes CycleDiffusion codes; it does not apply to "
                                           "method=pix2pix-zero")
    if amount < 0:
        raise RequestError(422, "cross_attention_guidance_amount", f"cross_attention_guidance_amount must be "
                                                                    f">= 0, got {amount:g}")
    if amount > 0 and not guided:
        raise RequestError(422, "cross_attention_guidance_amount", "this service's backend runs forward only, "
                           "so Pix2Pix-Zero's guided step cannot run here; send cross_attention_guidance_amount=0, "
                           "or serve with --backend torch or an export made with --attention-maps")


def encode_job(raw: dict[str, Any], form: bool, limits: Limits) -> EncodeJob:
    from cyclediff.runtime.core.requests import EncodeRequest

    F.check_known(raw, "encode")
    image, source = _file(raw, "image", form), F.text(raw, "source_prompt", limits)
    request = F.checked(lambda: EncodeRequest(image, source, params(raw, form, limits)))
    return EncodeJob(request, F.seed(raw, form, secrets.randbelow(2**31)), F.timeout(raw, form, limits))


def decode_job(raw: dict[str, Any], form: bool, limits: Limits, decoder: bool = False) -> DecodeJob:
    F.check_known(raw, "decode")
    scale = F.number(raw, "guidance_scale", 7.5, form)
    return DecodeJob(_file(raw, "code", form), F.prompts(raw, limits), scale, F.output_format(raw),
                     F.timeout(raw, form, limits), F.decoder(raw, decoder))


def params(raw: dict[str, Any], form: bool, limits: Limits):
    """EditParams with the Engine's own defaults and rules (its error names the field), plus --max-steps."""
    from cyclediff import EditParams

    defaults = EditParams()
    values = {name: F.number(raw, name, getattr(defaults, name), form, check=False) for name in F.SETTINGS}
    params = F.checked(lambda: EditParams(**values))
    if params.num_inference_steps > limits.max_steps:
        raise RequestError(422, "num_inference_steps", f"num_inference_steps must be <= {limits.max_steps} (the "
                                                       f"service's --max-steps), got {params.num_inference_steps}")
    return params


def field_of(err: BaseException) -> str | None:
    """The request field an Engine error is about: its .field, when it is one of ours."""
    field = getattr(err, "field", None)
    known = {name for names in F.ENDPOINT_FIELDS.values() for name in names}
    return field if field in known else None


def _file(raw: dict[str, Any], name: str, form: bool) -> bytes:
    value = raw.get(name)
    if value is None:
        what = "an image file (PNG, JPEG, WebP)" if name == "image" else "a latent code file from /v1/encode"
        raise RequestError(422, name, f"{name} is required: {what}, as a multipart file or base64 in JSON")
    if isinstance(value, bytes):
        return value
    return media.from_base64(name, value)


# ---- running a job on the Engine (worker thread) ----------------------------------------------------------------

def run_edit(engine, job: EditJob, token: CancelToken, limits: Limits, side_multiple: int, decoder=None,
             progress=None) -> list:
    """Engine.edit for one prompt; one shared encoding decoded per prompt for several (the engine's rule);
    decoded by `decoder` (the replica's second Engine) when the job asks for it. progress(): after every
    decoder step (a job's progress), after the cancel check."""
    import torch

    def step(*_: Any) -> None:
        token.check()
        if progress is not None:
            progress()

    image = media.read_image(job.request.image, limits, side_multiple)
    if job.method == "pix2pix-zero":
        from cyclediff.serve import pix2pix_job

        return pix2pix_job.run(engine, job, image, torch.Generator().manual_seed(job.seed), step)
    request = dataclasses.replace(job.request, image=image, generator=torch.Generator().manual_seed(job.seed),
                                  callback=step)
    return _images(engine.run(request, decoder=decoder if job.decoder else None))


def decoder_steps(engine, job: EditJob) -> int:
    """How many decoder steps the job runs in all (its progress bar's length): prompts x scheduled steps."""
    if job.method == "pix2pix-zero":
        from cyclediff.serve import pix2pix_job

        return pix2pix_job.steps(job)
    p = job.request.params
    return len(job.request.prompts) * engine.core.table(p.num_inference_steps, p.strength, p.eta).num_steps


def run_encode(engine, job: EncodeJob, token: CancelToken, limits: Limits, side_multiple: int) -> bytes:
    import torch

    image = media.read_image(job.request.image, limits, side_multiple)
    token.check()
    code = engine.run(dataclasses.replace(job.request, image=image,
                                          generator=torch.Generator().manual_seed(job.seed)))
    with tempfile.TemporaryDirectory(prefix="cyclediff-code-") as tmp:
        path = Path(tmp) / "code.safetensors"
        code.save(path)
        return path.read_bytes()


def run_decode(engine, job: DecodeJob, token: CancelToken, decoder=None) -> list:
    code = read_code(job.code)
    engine = decoder if job.decoder else engine
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
