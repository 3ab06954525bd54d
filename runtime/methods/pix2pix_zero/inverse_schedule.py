"""DDIMInverseScheduler's steps (diffusers >= 0.22) as float32 coefficient columns: level t − r -> level t."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cyclediff.runtime.core.checks import check_schedule_args
from cyclediff.runtime.core.schedule import ScheduleError, SchedulerConfig


@dataclasses.dataclass(frozen=True)
class InverseTable:
    """Per-step coefficients, each (N,), ascending timesteps (e.g. 1, 21, …, 981 for SD at N = 50).

    Step i evaluates the UNet at timesteps[i] on latents at level from = timesteps[i] − r and maps them to
    level timesteps[i]:  x̂0 = (x − sqrt_b_from·ε) / sqrt_a_from;  x ← sqrt_a_to·x̂0 + dir_to·ε.
    """

    timesteps: torch.Tensor  # (N,) int64
    sqrt_a_from: torch.Tensor  # sqrt(ᾱ_from), ᾱ_from = ᾱ[t − r], or ᾱ[0] / 1 (set_alpha_to_one) below 0
    sqrt_b_from: torch.Tensor  # sqrt(1 − ᾱ_from)
    sqrt_a_to: torch.Tensor  # sqrt(ᾱ_t)
    dir_to: torch.Tensor  # sqrt(1 − ᾱ_t)

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @classmethod
    def build(cls, cfg: SchedulerConfig, num_inference_steps: int) -> InverseTable:
        check_schedule_args(num_inference_steps, 1.0, 0.0)
        steps = inverse_timesteps(cfg, num_inference_steps)
        ac = cfg.alphas_cumprod()
        initial = torch.tensor(1.0) if cfg.set_alpha_to_one else ac[0]
        r, last = cfg.num_train_timesteps // num_inference_steps, cfg.num_train_timesteps - 1
        a_from = [ac[min(t - r, last)] if t - r >= 0 else initial for t in steps]
        a_to = [ac[t] for t in steps]
        # The reference's float32 ops: beta = 1 − ᾱ, then ** 0.5.
        return cls(
            timesteps=torch.tensor(steps, dtype=torch.int64),
            sqrt_a_from=torch.stack([a ** 0.5 for a in a_from]),
            sqrt_b_from=torch.stack([(1 - a) ** 0.5 for a in a_from]),
            sqrt_a_to=torch.stack([a ** 0.5 for a in a_to]),
            dir_to=torch.stack([(1 - a) ** 0.5 for a in a_to]),
        )


def inverse_timesteps(cfg: SchedulerConfig, n: int) -> list[int]:
    """DDIMInverseScheduler.set_timesteps, ascending. It knows only 'leading' and 'trailing' spacing."""
    t = cfg.num_train_timesteps
    if n > t:
        raise ScheduleError(f"num_inference_steps={n} exceeds the {t} training timesteps")
    if cfg.timestep_spacing == "leading":
        steps = (np.arange(0, n) * (t // n)).round().astype(np.int64) + cfg.steps_offset
    elif cfg.timestep_spacing == "trailing":
        steps = np.round(np.arange(t, 0, -t / n)[::-1]).astype(np.int64) - 1
    else:
        raise ScheduleError(f"timestep_spacing={cfg.timestep_spacing!r}: diffusers' DDIMInverseScheduler (which "
                            "Pix2PixZero inverts with) supports only 'leading' and 'trailing'; use CycleDiffusion "
                            "(--method cycle) with this checkpoint")
    return [int(x) for x in steps]
