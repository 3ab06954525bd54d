"""Guidance on the core: sample p(z | c) ∝ N(z; 0, I)·exp(−Σ λ_i E_i(G(z))) by Langevin, then decode z in full."""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Any

import torch

from cyclediff.runtime.core.batch import BatchPlan
from cyclediff.runtime.core.latent_code import LatentCode, LatentCodeError
from cyclediff.runtime.core.memory_plan import MemoryBudgetError, fmt_bytes
from cyclediff.runtime.core.model_gate import ModelGate
from cyclediff.runtime.core.noise import NoiseSource
from cyclediff.runtime.core.schedule import StepTable
from cyclediff.runtime.core.session import Core
from cyclediff.runtime.methods.cycle.method import CycleDiffusion
from cyclediff.runtime.methods.guidance import langevin, torch_parts
from cyclediff.runtime.methods.guidance.config import GuidanceError, LangevinConfig
from cyclediff.runtime.methods.guidance.energies import Energy
from cyclediff.runtime.methods.guidance.generator import DifferentiableDecoder, GuideText
from cyclediff.runtime.methods.guidance.requests import GuideRequest


@dataclasses.dataclass
class GuideOutput:
    """images: the final decode of the returned code (output_type); code: that LatentCode (save and re-decode it);
    history: per Langevin step, batch means of each energy; best_step: per sample, the step kept by keep_best."""

    images: Any
    code: LatentCode
    history: tuple[dict[str, float], ...]
    best_step: tuple[int, ...] | None = None


class Guidance:
    """Stateless apart from the lazily loaded differentiable modules (guarded by a lock): one serves every thread.

    A guide call is one public call of the core (`core.call()`: a workspace, in flight, max_concurrency), admitted
    against the memory budget before its first model call, and its differentiable model calls go through a
    ModelGate (gate.py): the caller's cancel check before each, the dispatcher's one-at-a-time rule around them."""

    def __init__(self, core: Core, cycle: CycleDiffusion):
        self.core, self.cycle = core, cycle
        self._parts: torch_parts.TorchParts | None = None
        self._lock = threading.Lock()

    def torch_parts(self) -> torch_parts.TorchParts:
        """The UNet and VAE decoder as differentiable torch modules (the torch backend's own, or loaded once)."""
        with self._lock:
            if self._parts is None:
                core = self.core
                self._parts = (torch_parts.from_runners(core.runners, core.backend, core.config.dtype)
                               or torch_parts.from_checkpoint(core.manifest, core.backend, core.device))
            return self._parts

    def start_code(self, prompts: tuple[str, ...], height: int | None, width: int | None, steps: int, eta: float,
                   generator) -> LatentCode:
        """A fresh code from the prior: x_T ~ N(0, I) (and one noise per step when eta > 0), strength 1."""
        d, core = self.core.manifest.dims, self.core
        h, w = height or core.manifest.sample_size, width or core.manifest.sample_size
        if h % d.vae_scale or w % d.vae_scale:
            raise GuidanceError(f"height and width must be multiples of {d.vae_scale} pixels, got {w}x{h}")
        core.check_latent_hw(h // d.vae_scale, w // d.vae_scale)
        table = core.table(steps, 1.0, eta)
        shape = (len(prompts), d.latent_channels, h // d.vae_scale, w // d.vae_scale)
        noise = NoiseSource(generator, 1, core.device)
        x_T = noise.randn_into(torch.empty(shape, device=core.device))
        noises = torch.zeros((table.num_steps, *shape), device=core.device)
        if eta > 0:
            noise.randn_into(noises)
        return LatentCode(x_T=x_T, noises=noises, timesteps=tuple(table.timesteps.tolist()),
                          num_inference_steps=steps, strength=1.0, eta=float(eta), source_prompts=prompts,
                          source_guidance_scale=1.0, engine_digest=core.manifest.digest, space=core.space)

    def inner_table(self, code: LatentCode, guide_steps: int | None) -> StepTable:
        """The sampler G runs inside the loop: the code's own schedule, or a shorter one (eta = 0 only: z = x_T)."""
        if guide_steps is None or guide_steps == code.num_inference_steps:
            return self.core.table(code.num_inference_steps, code.strength, code.eta)
        if code.eta > 0:
            raise GuidanceError(
                f"guide_steps={guide_steps} differs from the code's {code.num_inference_steps} steps, but with "
                f"eta={code.eta} the code holds one noise per decode step, so the sampler inside the loop must be "
                "the decode's own: pass guide_steps=None (or use a code made with eta=0, whose z is x_T alone)")
        return self.core.table(guide_steps, code.strength, 0.0)

    def sampler(self, code: LatentCode, prompts, guidance_scale: float, guide_steps: int | None = None,
                checkpoint: bool = True, parts: torch_parts.TorchParts | None = None,
                dtype: torch.dtype = torch.float32, gate: ModelGate | None = None) -> DifferentiableDecoder:
        """G for this code and prompt(s): the exact decode when guide_steps is None (or the code's step count).
        Its UNet and VAE decoder calls pass through `gate` (default: a new one on this engine's dispatcher)."""
        plan = BatchPlan.make(prompts, list(code.source_prompts), code.batch, 1)
        cond = self.core.prompts.encode(list(plan.target_prompts))
        uncond = self.core.prompts.encode([""]) if guidance_scale > 1 else None
        parts = parts or self.torch_parts()
        gate = gate or ModelGate(self.core.dispatcher)
        text = GuideText(cond, uncond, float(guidance_scale))
        return DifferentiableDecoder(gate.wrap(parts.unet), gate.wrap(parts.vae_decoder),
                                     self.inner_table(code, guide_steps), text, self.core.manifest.vae_scaling_factor,
                                     dtype, checkpoint)

    def guide(self, r: GuideRequest) -> GuideOutput:
        prompt, energies, start, config, generator = r.prompt, r.energies, r.start, r.config, r.generator
        guidance_scale = r.guidance_scale
        self._check_start(start, r.height, r.width)
        if start is None:
            prompts = tuple(BatchPlan.make(prompt, "", 1, 1).target_prompts)
            start = self.start_code(prompts, r.height, r.width, r.num_inference_steps, r.eta, generator)
        if config.n_steps > 0:
            self.inner_table(start, config.guide_steps)  # refuse a mismatched guide_steps before any work
        plan = BatchPlan.make(prompt, list(start.source_prompts), start.batch, 1)
        if plan.batch != start.batch:
            raise LatentCodeError(f"{plan.batch} prompts for a start code of {start.batch} images; pass one prompt "
                                  f"or {start.batch}")
        with self.core.call() as pool:  # the whole call: the loop and the final decode hold one workspace
            self._admit(start, energies, config, guidance_scale)
            result = self._langevin(start, list(plan.target_prompts), energies, config, guidance_scale, generator,
                                    r.callback)
            code = _with_parts(start, result.parts)
            images = self.cycle.decode(pool, code, list(plan.target_prompts), guidance_scale, r.output_type, None,
                                       None, None, 1)
        return GuideOutput(images, code, result.history, result.best_step)

    def _admit(self, start: LatentCode, energies: tuple[Energy, ...], config: LangevinConfig,
               guidance_scale: float) -> None:
        """Refuse, before any model call, a call whose loop (backward included) or final decode cannot fit the
        memory budget (MemoryPlanner.guidance_bytes)."""
        core = self.core
        decode = core.table(start.num_inference_steps, start.strength, start.eta).num_steps
        extra = 0
        if _active(energies, config) and config.n_steps > 0:
            inner = self.inner_table(start, config.guide_steps).num_steps
            extra = core.planner.guidance_bytes(*start.latent_hw, start.batch, inner, guidance_scale > 1,
                                                config.checkpoint)
        try:
            core.admit(start.latent_hw, start.batch, decode, guidance_scale > 1, False, extra)
        except MemoryBudgetError as err:
            if not extra:
                raise
            raise MemoryBudgetError(f"{err}. Of it, the guidance loop keeps about {fmt_bytes(extra)} for its "
                                    "backward pass; fewer guide_steps or checkpoint=True lower that") from err

    def _check_start(self, start, height, width) -> None:
        """A start code this export can decode, at the size asked (the request checked the rest)."""
        if start is None:
            return
        self.cycle.check_code(start)  # another export (checkpoint), a bad size, inconsistent tensors
        f = self.core.manifest.dims.vae_scale
        code_h, code_w = (s * f for s in start.latent_hw)
        if (height or code_h, width or code_w) != (code_h, code_w):
            raise LatentCodeError(f"the start code is for {code_w}x{code_h} pixels, not the {width or code_w}x"
                                  f"{height or code_h} asked; drop height/width or encode at that size")

    def _langevin(self, start: LatentCode, prompts, energies: tuple[Energy, ...], config: LangevinConfig,
                  guidance_scale: float, generator, callback) -> langevin.LangevinResult:
        latent = langevin.Latent((start.x_T.to(self.core.device), start.noises.to(self.core.device))
                                 if start.eta > 0 else (start.x_T.to(self.core.device),),
                                 (0, 1) if start.eta > 0 else (0,))
        active = _active(energies, config)
        energy, hold = None, contextlib.nullcontext
        if active and config.n_steps > 0:
            gate = ModelGate(self.core.dispatcher)
            decoder = self.sampler(start, prompts, guidance_scale, config.guide_steps, config.checkpoint, gate=gate)
            energy, hold = _energy_fn(decoder, active, _augment_rng(generator)), gate.hold
        with self.core.bar(config.n_steps, "guide") as bar:
            def step(i, record, pixels):
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items()}, refresh=False)
                bar.update(1)
                if callback is not None:
                    callback(i, record, pixels)

            return langevin.sample(latent, energy, config, generator, step, hold)


def _active(energies: tuple[Energy, ...], config: LangevinConfig) -> list[Energy]:
    """The energies G(z) is evaluated for: a positive weight, or the one keep_best watches."""
    return [e for e in energies if e.weight > 0 or e.name == config.keep_best]


def _energy_fn(decoder: DifferentiableDecoder, active: list[Energy], rng: torch.Generator) -> langevin.EnergyFn:
    def energy(zs):
        pixels = decoder(zs[0], zs[1] if len(zs) > 1 else None)  # (B, 3, H, W)
        parts = {e.name: e(pixels, rng) for e in active}  # each (B,)
        return sum(e.weight * parts[e.name] for e in active), parts, pixels

    return energy


def _augment_rng(generator) -> torch.Generator:
    """The energies' augmentations draw from their own CPU generator, seeded once from the caller's, so the
    Langevin noise ξ stays one stream and a seeded run repeats bit for bit."""
    device = generator.device if isinstance(generator, torch.Generator) else "cpu"
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device))
    return torch.Generator().manual_seed(seed)


def _with_parts(code: LatentCode, parts: tuple[torch.Tensor, ...]) -> LatentCode:
    x_T = parts[0].detach().clone()
    noises = parts[1].detach().clone() if len(parts) > 1 else code.noises
    return dataclasses.replace(code, x_T=x_T, noises=noises)
