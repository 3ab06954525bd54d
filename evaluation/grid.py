"""The sweep's settings grid: common axes, per-method options, and the candidates it makes per triplet."""
from __future__ import annotations

import dataclasses
import itertools
import math

from cyclediff.eval.metric_names import METRICS
from cyclediff.runtime.core.checks import InvalidArgument, check_edit_steps, check_number, check_range, check_seed

_AXIS_FLAGS = {"strength": "--strength values", "eta": "--eta values", "guidance_scale": "--guidance-scale values",
               "seed": "--seed"}


class GridError(ValueError):
    """A grid that cannot be swept; the message names the flag and the fix."""


@dataclasses.dataclass(frozen=True)
class SweepGrid:
    """Every candidate of one triplet: guidance_scales x strengths x etas x method options x trials.

    options: the method's own axes as (name, values) pairs, e.g. (("source_guidance_scale", (1.0, 2.0)),).
    Trial t uses seed `seed + t` for every triplet and setting (common random numbers across settings)."""

    method: str = "cycle"
    guidance_scales: tuple[float, ...] = (2.0,)
    strengths: tuple[float, ...] = (0.8,)
    etas: tuple[float, ...] = (0.1,)
    trials: int = 1
    steps: int = 50
    seed: int = 0
    options: tuple[tuple[str, tuple[float, ...]], ...] = ()
    # The decoder axis (--decoder-engine): names of the exports that decode each code (translation between two
    # models; the sweep maps each name to its folder). Empty: the encoding export decodes, as without the axis.
    decoders: tuple[str, ...] = ()

    def __post_init__(self):
        for flag, values in (("--guidance-scale", self.guidance_scales), ("--strength", self.strengths),
                             ("--eta", self.etas), *((f"--option {k}", v) for k, v in self.options)):
            _check_axis(flag, values)
        for flag, n, low in (("--trials", self.trials, 1), ("--steps", self.steps, 1), ("--seed", self.seed, 0)):
            check_number(flag, n, integer=True, low=low, error=GridError)
        self._request_rules()

    def _request_rules(self) -> None:
        """Each axis value by the Engine's own request rules, so a bad value gets the words every front door
        gives it (the API, cyclediff-run, --jobs, the service), the flag named as this CLI spells it."""
        try:
            for s in self.strengths:
                check_range("strength", s, 0, 1)
                check_edit_steps(self.steps, s)
            for e in self.etas:
                check_number("eta", e, low=0)
            for g in self.guidance_scales:
                check_number("guidance_scale", g)
            check_seed("seed", self.seed + self.trials - 1)  # trial t runs seed + t
        except InvalidArgument as err:
            raise GridError(err.renamed(_AXIS_FLAGS[err.field])) from None

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(self.seed + t for t in range(self.trials))

    def option_values(self, name: str, default: float) -> tuple[float, ...]:
        return dict(self.options).get(name, (default,))

    def size(self) -> int:
        """Candidates per triplet."""
        n = len(self.guidance_scales) * len(self.strengths) * len(self.etas) * self.trials * max(1, len(self.decoders))
        return n * math.prod(len(v) for _, v in self.options)


def product(**axes: tuple[float, ...]) -> list[dict[str, float]]:
    """Every combination of the named axes, in the order given (the first axis varies slowest)."""
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*axes.values())]


def parse_values(flag: str, text: str) -> tuple[float, ...]:
    """'1,2,3' -> (1.0, 2.0, 3.0); duplicates and order kept as given (the grid is what the user wrote)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise GridError(f"{flag} {text!r}: give comma-separated numbers, e.g. {flag} 1,2,3")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise GridError(f"{flag} {text!r}: not a comma-separated list of numbers") from None
    _check_axis(flag, values)
    return values


def parse_option(text: str) -> tuple[str, tuple[float, ...]]:
    """'name=1,2' -> ('name', (1.0, 2.0))."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip():
        raise GridError(f"--option {text!r}: write NAME=V1,V2 (e.g. --option source_guidance_scale=1,2)")
    return name.strip(), parse_values(f"--option {name.strip()}", values)


def check_metric(name: str) -> str:
    if name not in METRICS:
        raise GridError(f"unknown metric {name!r} for --select; choose one of {', '.join(METRICS)}")
    return name


def _check_axis(flag: str, values: tuple[float, ...]) -> None:
    if not values:
        raise GridError(f"{flag}: empty grid axis; give at least one value")
    for v in values:  # the request rules' words (runtime/core/checks.py), as for every other front door
        check_number(f"{flag} values", v, error=GridError)


# Named grids (cyclediff-eval --preset). paper-translate: the paper's text-guided translation sweep (ChenWu98/
# cycle-diffusion config/experiments/translate_text2img256_stable_diffusion_stochastic_*.cfg): decoder guidance
# 1-5, encoder guidance 1, eta 0.1, 100 white-box steps, 15 trials, skip_steps 15, 20, 25, 30, 40, 50 of the 100,
# i.e. strength = (100 - skip) / 100.
PRESETS: dict[str, SweepGrid] = {
    "paper-translate": SweepGrid(guidance_scales=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0),
                                 strengths=(0.85, 0.8, 0.75, 0.7, 0.6, 0.5), etas=(0.1,), trials=15, steps=100,
                                 options=(("source_guidance_scale", (1.0,)),)),
}
