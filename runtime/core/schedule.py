"""DDIM schedule tables: the checkpoint's scheduler config -> per-step coefficients for one (steps, strength, eta)."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cyclediff.runtime.core.checks import check_schedule_args

SUPPORTED_BETAS = ("linear", "scaled_linear", "squaredcos_cap_v2")
SUPPORTED_SPACINGS = ("leading", "trailing", "linspace")


class ScheduleError(ValueError):
    """A scheduler config or schedule request the method cannot serve; field: the request field it is about."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The DDIM fields that change the numbers. Read from the checkpoint; never hard-coded."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    trained_betas: tuple[float, ...] | None = None
    set_alpha_to_one: bool = False
    steps_offset: int = 1
    timestep_spacing: str = "leading"

    @classmethod
    def from_diffusers(cls, cfg: dict[str, Any]) -> "SchedulerConfig":
        """Validate a diffusers scheduler config the way CycleDiffusionPipeline would use it."""
        _refuse(cfg)
        trained = cfg.get("trained_betas")
        return cls(
            num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
            beta_start=float(cfg.get("beta_start", 0.0001)),
            beta_end=float(cfg.get("beta_end", 0.02)),
            beta_schedule=str(cfg.get("beta_schedule", "linear")),
            trained_betas=tuple(float(b) for b in trained) if trained is not None else None,
            set_alpha_to_one=bool(cfg.get("set_alpha_to_one", True)),
            # The reference pipeline's constructor rewrites steps_offset != 1 to 1 (with a deprecation
            # warning); doing the same keeps our timesteps identical to what it runs.
            steps_offset=1,
            timestep_spacing=str(cfg.get("timestep_spacing", "leading")),
        )

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["trained_betas"] = list(self.trained_betas) if self.trained_betas is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "SchedulerConfig":
        d = dict(d)
        if d.get("trained_betas") is not None:
            d["trained_betas"] = tuple(d["trained_betas"])
        return cls(**d)

    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ, float32 (num_train_timesteps,), by exactly DDIMScheduler's float32 ops."""
        n = self.num_train_timesteps
        if self.trained_betas is not None:
            betas = torch.tensor(self.trained_betas, dtype=torch.float32)
        elif self.beta_schedule == "linear":
            betas = torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float32)
        elif self.beta_schedule == "scaled_linear":
            betas = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=torch.float32) ** 2
        else:
            betas = _cosine_betas(n)
        return torch.cumprod(1.0 - betas, dim=0)

    def timesteps(self, num_inference_steps: int) -> list[int]:
        """DDIMScheduler.set_timesteps' integer timesteps, highest first."""
        n, t = num_inference_steps, self.num_train_timesteps
        if n > t:
            raise ScheduleError(f"num_inference_steps={n} exceeds the {t} training timesteps")
        if self.timestep_spacing == "linspace":
            steps = np.linspace(0, t - 1, n).round()[::-1]
        elif self.timestep_spacing == "leading":
            steps = (np.arange(0, n) * (t // n)).round()[::-1] + self.steps_offset
        else:
            steps = np.round(np.arange(t, 0, -t / n)) - 1
        return [int(x) for x in steps.astype(np.int64)]


def _refuse(cfg: dict[str, Any]) -> None:
    checks = [
        (cfg.get("prediction_type", "epsilon") != "epsilon",
         f"prediction_type={cfg.get('prediction_type')!r}: CycleDiffusion's noise recording assumes epsilon "
         "prediction (the reference is inconsistent for v-prediction); use an SD v1.x epsilon checkpoint"),
        (bool(cfg.get("clip_sample", False)),
         "clip_sample=true clamps latents to [-1, 1], which is wrong for latent diffusion; set "
         "\"clip_sample\": false in scheduler/scheduler_config.json (SD v1.x ships it false)"),
        (bool(cfg.get("thresholding", False)), "thresholding=true is not supported for latent diffusion; set it false"),
        (bool(cfg.get("rescale_betas_zero_snr", False)),
         "rescale_betas_zero_snr=true makes the final ᾱ zero, where the DPM-Encoder's posterior is undefined"),
        (cfg.get("beta_schedule", "linear") not in SUPPORTED_BETAS and cfg.get("trained_betas") is None,
         f"beta_schedule={cfg.get('beta_schedule')!r} is not one of {SUPPORTED_BETAS}"),
        (cfg.get("timestep_spacing", "leading") not in SUPPORTED_SPACINGS,
         f"timestep_spacing={cfg.get('timestep_spacing')!r} is not one of {SUPPORTED_SPACINGS}"),
    ]
    for failed, why in checks:
        if failed:
            raise ScheduleError(f"unsupported scheduler config: {why}")


def _cosine_betas(n: int, max_beta: float = 0.999) -> torch.Tensor:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


def num_edit_steps(num_inference_steps: int, strength: float) -> int:
    """How many of the N steps an edit runs: min(int(N·strength), N) with Python's float truncation."""
    return min(int(num_inference_steps * strength), num_inference_steps)


def torch_sqrt(v: torch.Tensor) -> torch.Tensor:
    """`v ** 0.5` on a 0-dim float32 tensor, as diffusers' DDIMScheduler: torch's CPU sqrt is MKL's, 1 ulp off the
    correctly rounded value for about 0.6 % of inputs."""
    return v ** (0.5)


def rounded_sqrt(v: torch.Tensor) -> torch.Tensor:
    """The correctly rounded float32 square root (numpy's, std::sqrt's): what libcyclediff's executors without
    libtorch compute, so that the openvino backend's Python and C++ tables are bit-equal (a 1-ulp coefficient
    difference grows to 9/255 per pixel through a bf16 UNet on a random-weight model)."""
    return torch.from_numpy(np.asarray(np.sqrt(v.detach().cpu().numpy().astype(np.float32))))


COEFFICIENTS = ("sqrt_a", "sqrt_b", "sqrt_a_prev", "dir_coef", "sigma", "sigma_den")


@dataclasses.dataclass(frozen=True)
class StepTable:
    """Per-step float32 coefficients of one edit schedule, each shaped (K,), K = steps actually run.

    Every coefficient is computed with the same float32 tensor ops as diffusers' DDIMScheduler, so the
    step arithmetic built on them reproduces the reference to the last bit where the operands agree.
    """

    timesteps: torch.Tensor  # (K,) int64, e.g. 781 … 1
    sqrt_a: torch.Tensor  # sqrt(ᾱ_t)
    sqrt_b: torch.Tensor  # sqrt(1 − ᾱ_t)
    sqrt_a_prev: torch.Tensor  # sqrt(ᾱ_prev)
    sigma: torch.Tensor  # eta · sqrt(var_t)
    sigma_den: torch.Tensor  # sqrt(var_t) · eta (the reference's divisor; same value, its own op order)
    dir_coef: torch.Tensor  # sqrt(1 − ᾱ_prev − σ²)
    draws: tuple[bool, ...]  # does the source posterior draw noise at this step (prev timestep > 0)
    a_t0: torch.Tensor  # ᾱ at the first step: x_T = sqrt(ᾱ)·x0 + sqrt(1−ᾱ)·n0
    eta: float
    num_inference_steps: int
    strength: float

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def coefficients(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The (K,) coefficient columns on `device`, by field name (what the DDIM functions take)."""
        return {n: getattr(self, n).to(device) for n in COEFFICIENTS}

    @classmethod
    def build(cls, cfg: SchedulerConfig, num_inference_steps: int, strength: float, eta: float,
              sqrt: Callable[[torch.Tensor], torch.Tensor] = torch_sqrt) -> "StepTable":
        """sqrt: how each coefficient's square root is rounded: torch's (the reference's, default) or
        `rounded_sqrt` (see there)."""
        check_schedule_args(num_inference_steps, strength, eta)
        init = num_edit_steps(num_inference_steps, strength)
        if init == 0:
            raise ScheduleError(
                f"strength={strength} with num_inference_steps={num_inference_steps} runs zero steps "
                f"(int({num_inference_steps}·{strength}) = 0); raise strength or num_inference_steps"
            )
        steps = cfg.timesteps(num_inference_steps)[num_inference_steps - init:]
        if steps[0] >= cfg.num_train_timesteps:  # 'leading' + steps_offset 1, all steps: diffusers' DDIM fails too
            raise ScheduleError(f"num_inference_steps={num_inference_steps} at strength {strength} with this "
                                f"checkpoint's {cfg.timestep_spacing!r} timestep spacing (steps_offset "
                                f"{cfg.steps_offset}) starts at timestep {steps[0]}, past the last of its "
                                f"{cfg.num_train_timesteps} training timesteps; use fewer steps or a lower strength",
                                "num_inference_steps")
        ac = cfg.alphas_cumprod()
        final = torch.tensor(1.0) if cfg.set_alpha_to_one else ac[0]
        ratio = cfg.num_train_timesteps // num_inference_steps
        cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("sa", "sb", "sap", "sig", "den", "dir")}
        for t in steps:
            _append_coefs(cols, ac, final, t, t - ratio, eta, sqrt)
        return cls(
            timesteps=torch.tensor(steps, dtype=torch.int64),
            sqrt_a=torch.stack(cols["sa"]),
            sqrt_b=torch.stack(cols["sb"]),
            sqrt_a_prev=torch.stack(cols["sap"]),
            sigma=torch.stack(cols["sig"]),
            sigma_den=torch.stack(cols["den"]),
            dir_coef=torch.stack(cols["dir"]),
            draws=tuple(t - ratio > 0 for t in steps),
            a_t0=ac[steps[0]],
            eta=float(eta),
            num_inference_steps=num_inference_steps,
            strength=float(strength),
        )


def _append_coefs(cols, ac: torch.Tensor, final: torch.Tensor, t: int, prev: int, eta: float, sqrt) -> None:
    a_t = ac[t]
    a_prev = ac[prev] if prev >= 0 else final
    variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)  # DDIMScheduler._get_variance
    sigma = eta * sqrt(variance)
    cols["sa"].append(sqrt(a_t))
    cols["sb"].append(sqrt(1 - a_t))
    cols["sap"].append(sqrt(a_prev))
    cols["sig"].append(sigma)
    cols["den"].append(sqrt(variance) * eta)
    cols["dir"].append(sqrt(1 - a_prev - sigma**2))
