"""CycleDiffusion on the core: encode (DPM-Encoder), decode (DDIM with recorded noises), edit (both)."""
from __future__ import annotations

import functools
import logging

import torch

from cyclediff.export.specs import UNET
from cyclediff.runtime.core import images
from cyclediff.runtime.core.batch import BatchPlan
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.config import EditParams
from cyclediff.runtime.core.latent_code import LatentCode, LatentCodeError
from cyclediff.runtime.core.noise import NoiseSource
from cyclediff.runtime.core.session import Core
from cyclediff.runtime.methods.cycle.decoder import DdimDecoder, TargetText
from cyclediff.runtime.methods.cycle.encoder import DpmEncoder, SourceText

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)  # once per (code's export, this export) pair: a sweep decodes thousands
def _say_differences(source: str, target: str, differences: tuple[str, ...]) -> None:
    if differences:
        log.warning("decoding a code from export %s… with export %s…, whose %s differ: the code lives in the "
                    "first export's latent space", source[:12], target[:12], " and ".join(differences))


class CycleDiffusion:
    """Stateless on top of the Core (all shared state lives there), so one instance serves every thread."""

    def __init__(self, core: Core):
        self.core = core

    def make_encoder(self, pool: BufferPool, chunk: int | None = None) -> DpmEncoder:
        """A DPM-Encoder on `pool` (a borrowed workspace) whose UNet calls go through the dispatcher."""
        return DpmEncoder(self.core.dispatcher.runner(UNET), pool, chunk or self.core.config.max_batch)

    def make_decoder(self, pool: BufferPool) -> DdimDecoder:
        return DdimDecoder(self.core.dispatcher.runner(UNET), pool)

    # ---- encode -------------------------------------------------------------------------------------
    def encode(self, pool: BufferPool, prepared: images.Prepared, plan: BatchPlan, params: EditParams, generator,
               clip_skip, guided: bool, target_guided: bool = False) -> LatentCode:
        """The DPM-Encoder: draws n_vae, n0, then one noise per step, in diffusers' order."""
        core = self.core
        table = core.table(params.num_inference_steps, params.strength, params.eta)
        chunk = core.admit(core.latent_hw(prepared), plan.batch, table.num_steps, target_guided,
                           guided and params.eta > 0)
        noise = NoiseSource(generator, plan.batch, core.device)
        encoder = self.make_encoder(pool, chunk)
        x0 = core.clean_latents(pool, prepared, plan, noise)
        x_T = encoder.noised(x0, table, noise)
        xs = encoder.trajectory(x0, x_T, table, noise)
        z = torch.zeros((table.num_steps, *x0.shape), device=core.device)
        if params.eta > 0:  # at eta = 0 the decoder adds no noise: the source UNet calls are not needed
            text = self._source_text(plan, params, clip_skip, guided)
            with core.bar(table.num_steps * plan.batch * (2 if guided else 1), "encode") as bar:
                encoder.progress = bar
                z = encoder.record(xs, encoder.source_eps(xs, table, text), table)
        return LatentCode(
            x_T=x_T.clone(), noises=z.clone(), timesteps=tuple(table.timesteps.tolist()),
            num_inference_steps=params.num_inference_steps, strength=params.strength, eta=params.eta,
            source_prompts=plan.source_prompts, source_guidance_scale=float(params.source_guidance_scale),
            engine_digest=core.manifest.digest, space=core.space,
        )

    def _source_text(self, plan: BatchPlan, params: EditParams, clip_skip, guided: bool) -> SourceText:
        cond = self.core.prompts.encode(list(plan.source_prompts), clip_skip)
        # The unconditional text is always "" and never clip-skipped, as in the reference.
        uncond = self.core.prompts.encode([""]) if guided else None
        return SourceText(cond, uncond, float(params.source_guidance_scale))

    # ---- decode -------------------------------------------------------------------------------------
    def decode(self, pool: BufferPool, code: LatentCode, prompt, guidance_scale: float, output_type: str,
               prompt_embeds, clip_skip, callback, callback_steps: int):
        """The DDIM loop from code.x_T with the recorded noises and the target text, then the VAE. The scalar
        arguments were checked by the caller's request (DecodeRequest, or guidance's own checks)."""
        self.check_code(code)
        plan = BatchPlan.make(prompt, list(code.source_prompts), code.batch, 1, prompt_embeds)
        if plan.batch != code.batch:
            raise LatentCodeError(f"{plan.batch} target prompts for a code of {code.batch} images; pass one "
                                  f"prompt or {code.batch}")
        core = self.core
        table = core.table(code.num_inference_steps, code.strength, code.eta)
        if tuple(table.timesteps.tolist()) != tuple(code.timesteps):  # a same-schedule export gives the same steps
            raise LatentCodeError(f"the code's timesteps {list(code.timesteps)} are not this engine's "
                                  f"{table.timesteps.tolist()} for {code.num_inference_steps} steps at strength "
                                  f"{code.strength}")
        core.admit(code.latent_hw, code.batch, table.num_steps, guidance_scale > 1, False)
        text = self.target_text(plan, prompt_embeds, guidance_scale, clip_skip)
        noises = code.noises.to(core.device) if code.eta > 0 else None
        with core.bar(table.num_steps, "decode") as bar:
            latents = self.make_decoder(pool).run(code.x_T.to(core.device), noises, table, text, callback,
                                                  callback_steps, bar)
        return core.finish(pool, latents, output_type)

    def check_code(self, code: LatentCode) -> None:
        """Refuse a code this export cannot decode (another latent space, a bad size, inconsistent tensors); say
        when it comes from another export with another VAE or text encoder (allowed: latent_space.py)."""
        if not isinstance(code, LatentCode):
            raise TypeError(f"code must be a LatentCode (from Engine.encode or LatentCode.load), got {type(code)}")
        if not self.core.manifest.made(code.engine_digest):
            self._check_space(code)
        self.core.check_latent_hw(*code.latent_hw)
        if code.x_T.shape[1] != self.core.manifest.dims.latent_channels or code.noises.shape[1:] != code.x_T.shape:
            raise LatentCodeError(f"LatentCode tensors have inconsistent shapes {tuple(code.x_T.shape)} and "
                                  f"{tuple(code.noises.shape)}")

    def _check_space(self, code: LatentCode) -> None:
        if code.space is None:
            raise LatentCodeError("this LatentCode was made by another engine export and records no latent space "
                                  "(saved by cyclediff < 0.2 or the C++ host); encode the image again with this "
                                  "engine, or decode it with the export that made it")
        why = code.space.incompatibilities(self.core.space)
        if why:
            raise LatentCodeError("this LatentCode's latent space is not this engine's, so it cannot decode it: "
                                  + "; ".join(why) + ". Decode it with the export that made it, or with a fine-tune "
                                  "of the same base model")
        _say_differences(code.engine_digest, self.core.manifest.digest,
                         tuple(code.space.differences(self.core.space)))

    def target_text(self, plan: BatchPlan, prompt_embeds, guidance_scale: float, clip_skip) -> TargetText:
        prompts = self.core.prompts
        if prompt_embeds is not None:
            cond = prompt_embeds.to(self.core.device, torch.float32)[list(plan.embeds_index)]
        else:
            cond = prompts.encode(list(plan.target_prompts), clip_skip)
        uncond = prompts.encode([""]) if guidance_scale > 1 else None
        return TargetText(cond, uncond, float(guidance_scale))

