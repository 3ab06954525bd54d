"""Typed, bounded reading of a request's fields (JSON values or multipart form strings), one error per field."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from cyclediff.runtime.core.checks import InvalidArgument, check_number, check_seed
from cyclediff.serve.config import Limits
from cyclediff.serve.errors import RequestError

T = TypeVar("T")

SETTINGS = ("strength", "num_inference_steps", "guidance_scale", "source_guidance_scale", "eta")
OUTPUT_FORMATS = ("png", "npy")
# Fields each endpoint accepts: anything else is a 422 (a typo must not silently fall back to a default).
ENDPOINT_FIELDS = {
    "edit": ("image", "source_prompt", "prompt", *SETTINGS, "seed", "output_format", "timeout_s", "decoder",
             "method", "cross_attention_guidance_amount"),
    "encode": ("image", "source_prompt", "strength", "num_inference_steps", "source_guidance_scale", "eta", "seed",
               "timeout_s"),
    "decode": ("code", "prompt", "guidance_scale", "output_format", "timeout_s", "decoder"),
}
INTEGERS = ("num_inference_steps", "seed")


def check_known(raw: dict[str, Any], endpoint: str) -> None:
    known = ENDPOINT_FIELDS[endpoint]
    for name in raw:
        if name not in known:
            raise RequestError(422, name, f"unknown field {name!r} for /v1/{endpoint}; known fields: "
                                          f"{', '.join(known)}")


def number(raw: dict[str, Any], name: str, default: Any, from_form: bool, check: bool = True) -> Any:
    """An int (INTEGERS) or a finite float; form values arrive as strings and are parsed. check=False: the value
    as sent, for a caller whose request (EditParams) checks it with its bounds in one message."""
    value = raw.get(name)
    if value is None:
        return default
    integer = name in INTEGERS
    if from_form and isinstance(value, str):
        value = _parse(name, value, integer)
    if not check:
        return value
    checked(lambda: check_number(name, value, integer=integer))
    return value if integer else float(value)


def checked(build: Callable[[], T]) -> T:
    """build(), its InvalidArgument answered as a 422 naming the field, in the Engine's own words (as every front
    door gives them)."""
    try:
        return build()
    except InvalidArgument as err:
        raise RequestError(422, err.field, str(err)) from None


def _parse(name: str, text: str, integer: bool) -> int | float:
    try:
        return int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise RequestError(422, name, f"{name} must be {kind}, got {text!r}; send e.g. {name}={_example(name)}") \
            from None


def _example(name: str) -> str:
    return {"num_inference_steps": "50", "seed": "0", "timeout_s": "60"}.get(name, "0.8")


def text(raw: dict[str, Any], name: str, limits: Limits) -> str:
    value = raw.get(name)
    if value is None:
        raise RequestError(422, name, f"{name} is required: a string describing the input image")
    return _one_text(name, value, limits)


def _one_text(name: str, value: Any, limits: Limits) -> str:
    if not isinstance(value, str):
        raise RequestError(422, name, f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limits.max_prompt_chars:
        raise RequestError(422, name, f"{name} has {len(value)} characters, more than the limit "
                                      f"{limits.max_prompt_chars}; shorten it (CLIP reads 77 tokens)")
    return value


def prompts(raw: dict[str, Any], limits: Limits) -> tuple[str, ...]:
    """`prompt`: a string or a list of 1..max_prompts strings (each list entry decodes one shared encoding)."""
    value = raw.get("prompt")
    if value is None:
        raise RequestError(422, "prompt", "prompt is required: a target prompt, or a list of them")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise RequestError(422, "prompt", f"prompt must be a string or a non-empty list of strings, got "
                                          f"{type(value).__name__}")
    if len(items) > limits.max_prompts:
        raise RequestError(422, "prompt", f"{len(items)} prompts, more than the limit {limits.max_prompts}; "
                                          "split them over several requests")
    return tuple(_one_text("prompt", p, limits) for p in items)


def seed(raw: dict[str, Any], from_form: bool, fresh: int) -> int:
    """The request's seed, or `fresh` (a random one the response reports) when it has none."""
    value = number(raw, "seed", None, from_form)
    if value is None:
        return fresh
    checked(lambda: check_seed("seed", value))
    return value


def timeout(raw: dict[str, Any], from_form: bool, limits: Limits) -> float:
    """The request's own timeout, at most the service's --request-timeout."""
    value = number(raw, "timeout_s", None, from_form)
    if value is None:
        return limits.request_timeout_s
    if not 0 < value <= limits.request_timeout_s:
        raise RequestError(422, "timeout_s", f"timeout_s must be in (0, {limits.request_timeout_s:g}] (the "
                                             f"service's --request-timeout), got {value:g}")
    return value


def decoder(raw: dict[str, Any], loaded: bool) -> bool:
    """`decoder`: true decodes with the replica's second export (--decoder-engine); form values true/false/1/0."""
    value = raw.get("decoder", False)
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        value = value.lower() in ("true", "1")
    if not isinstance(value, bool):
        raise RequestError(422, "decoder", f"decoder must be true or false, got {value!r}")
    if value and not loaded:
        raise RequestError(422, "decoder", "decoder=true, but this service loads no second export; start it with "
                                           "`cyclediff-serve --decoder-engine DIR`, or drop decoder")
    return value


METHODS = ("cycle", "pix2pix-zero")


def method(raw: dict[str, Any]) -> str:
    """`method`: cycle (CycleDiffusion, default) or pix2pix-zero (serve/pix2pix_job.py)."""
    value = raw.get("method", "cycle")
    if value not in METHODS:
        raise RequestError(422, "method", f"method must be one of {METHODS}, got {value!r}")
    return value


def output_format(raw: dict[str, Any]) -> str:
    value = raw.get("output_format", "png")
    if value not in OUTPUT_FORMATS:
        raise RequestError(422, "output_format", f"output_format must be one of {OUTPUT_FORMATS}, got {value!r}")
    return value
