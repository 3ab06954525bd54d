"""The one set of argument rules of the project, and its one error type.

Every front door (the Python `Engine`, the CLIs and `--jobs`, the HTTP service, `cyclediff-eval`) builds its requests
through these checks, so the same bad value gets the same words everywhere. An `InvalidArgument` carries the
argument's name (`.field`) apart from the rest of the message (`.detail`): a front door spells the name its own way
(`--steps`, `settings.seed`, a JSON field) and keeps the detail. No torch here (CLIs check before importing it)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

SEED_LIMIT = 2**63  # torch.Generator.manual_seed's range for a non-negative seed
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class InvalidArgument(ValueError):
    """A bad argument value: str() is "{field} {detail}", detail says what is expected and what was given."""

    def __init__(self, field: str, detail: str):
        super().__init__(f"{field} {detail}")
        self.field, self.detail = field, detail

    def renamed(self, name: str) -> str:
        """The message with the field spelled as the caller's front door spells it."""
        return f"{name} {self.detail}"


class WrongType(InvalidArgument, TypeError):
    """A value of the wrong type (a TypeError too, as Python's own argument errors are)."""


def check_number(name: str, value: Any, *, integer: bool = False, low: float | None = None,
                 strict: bool = False, error: type[Exception] | None = None) -> None:
    """A real number (never a bool, never a string), finite, an integer when asked, at least `low` when given
    (above it when strict). error: raise that type (built from the whole message, `.field` set) instead of
    InvalidArgument."""
    bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
    real = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if not real:
        _fail(name, f"must be {'an integer' if integer else 'a number'}{bound}, got {_shown(value)}",
              error or WrongType)
    below = low is not None and (value <= low if strict else value < low)
    if not integer and not math.isfinite(value) or below:
        _fail(name, f"must be {'an integer' if integer else 'a finite number'}{bound}, got {value!r}", error)


def check_range(name: str, value: Any, low: float, high: float, *, open_low: bool = True) -> None:
    """A finite number in (low, high] (or [low, high] with open_low=False)."""
    check_number(name, value)
    if not (low < value if open_low else low <= value) or value > high:
        left = "(" if open_low else "["
        raise InvalidArgument(name, f"must be in {left}{low:g}, {high:g}], got {value!r}")


def check_optional_int(name: str, value: Any, low: int) -> None:
    """None (the default), or an integer >= low: clip_skip, height, width."""
    if value is not None:
        check_number(name, value, integer=True, low=low)


def check_choice(name: str, value: Any, options: Sequence[Any]) -> None:
    if value not in options:
        raise InvalidArgument(name, f"must be one of {tuple(options)}, got {value!r}")


def check_seed(name: str, value: Any) -> None:
    """A seed a torch.Generator accepts, as every front door takes it: an integer in [0, 2**63)."""
    check_number(name, value, integer=True)
    if not 0 <= value < SEED_LIMIT:
        raise InvalidArgument(name, f"must be in [0, 2**63), got {value}")


def check_text(name: str, value: Any, *, required: bool = True) -> None:
    """A string without NUL characters (CLIP's tokenizer and the C ABI end strings there)."""
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise WrongType(name, f"must be a string, got {_shown(value)}")
    if "\x00" in value:
        raise InvalidArgument(name, "must not contain NUL characters")


def check_prompts(name: str, value: Any) -> tuple[str, ...]:
    """A prompt or a non-empty list of prompts -> the tuple of prompts."""
    if isinstance(value, str):
        check_text(name, value)
        return (value,)
    if not isinstance(value, (list, tuple)) or not value:
        raise (InvalidArgument if isinstance(value, (list, tuple)) else WrongType)(
            name, f"must be a string or a non-empty list of strings, got {_shown(value)}")
    for item in value:
        check_text(name, item)
    return tuple(value)


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if isinstance(value, str) else repr(value)


def _fail(name: str, detail: str, error: type[Exception] | None) -> None:
    if error is None or issubclass(error, InvalidArgument):
        raise (error or InvalidArgument)(name, detail)
    err = error(f"{name} {detail}")
    err.field = name  # type: ignore[attr-defined]
    raise err


def check_schedule_args(num_inference_steps: Any, strength: Any, eta: Any) -> None:
    """The scalar schedule arguments every entry point shares."""
    check_number("num_inference_steps", num_inference_steps, integer=True, low=1)
    check_range("strength", strength, 0, 1)
    check_number("eta", eta, low=0)


def check_edit_steps(num_inference_steps: int, strength: float) -> None:
    """An edit runs min(int(N·strength), N) of the N steps (diffusers' img2img truncation): never zero."""
    if min(int(num_inference_steps * strength), num_inference_steps) == 0:
        raise InvalidArgument("strength", f"{strength} with num_inference_steps {num_inference_steps} runs zero "
                                          "denoising steps (int(num_inference_steps · strength) = 0, and zero steps "
                                          "edit nothing); raise strength or num_inference_steps")


def check_no_attention_kwargs(value: Any) -> None:
    if value:
        raise InvalidArgument("cross_attention_kwargs", "(LoRA scale, attention processors) cannot change an "
                                                        "exported engine; export the checkpoint with the LoRA fused "
                                                        "instead")


def check_output_args(output_type: Any, callback_steps: Any) -> None:
    check_choice("output_type", output_type, OUTPUT_TYPES)
    check_number("callback_steps", callback_steps, integer=True, low=1)
