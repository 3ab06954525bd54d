"""The public API: `Engine.load(DIR)`, then one thin method per operation, each delegating to a method module."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from cyclediff.runtime.core.batch import BatchPlan
from cyclediff.runtime.core.config import EditParams, EngineConfig, check_output_args
from cyclediff.runtime.core.latent_code import LatentCode
from cyclediff.runtime.core.session import Core
from cyclediff.runtime.methods.cycle.method import CycleDiffusion
from cyclediff.runtime.methods.guidance.method import Guidance, GuideOutput
from cyclediff.runtime.methods.pix2pix_zero.method import Pix2PixZero


@dataclasses.dataclass
class EditOutput:
    """Same fields as diffusers' StableDiffusionPipelineOutput (no safety checker runs: always None)."""

    images: Any
    nsfw_content_detected: list[bool] | None = None


class Engine:
    """Safe to share between threads: every public method may run in any number of threads at once.

    All shared mutable state lives in the Core (runtime/core/session.py, which states the locking rules);
    the method objects (CycleDiffusion, ...) hold nothing but a reference to it.
    """

    def __init__(self, core: Core):
        self.core = core
        # Read-only views of the core that callers and tools use (manifest, backend, device, ...).
        self.folder, self.manifest, self.config, self.backend = core.folder, core.manifest, core.config, core.backend
        self.device, self.runners, self.scheduler = core.device, core.runners, core.scheduler
        self.workspaces, self.planner, self.dispatcher, self.prompts = (core.workspaces, core.planner,
                                                                        core.dispatcher, core.prompts)
        self.cycle = CycleDiffusion(core)
        self.guidance = Guidance(core, self.cycle)
        self.pix2pix = Pix2PixZero(core)
        self.make_encoder, self.make_decoder = self.cycle.make_encoder, self.cycle.make_decoder

    @classmethod
    def load(cls, folder: str | Path, backend: str = "auto", device: str = "cpu", max_batch: int = 16,
             progress: bool = True, dtype: str = "fp32", cuda_graphs: bool = True, verify: str = "fast",
             threads: int | None = None, max_memory: int | str | None = None, batch_wait_ms: float = 5.0,
             max_concurrency: int = 8) -> "Engine":
        """Open an export directory. backend: 'auto' | 'torch' | 'onnxruntime' | 'tensorrt'; dtype 'fp32' | 'fp16'.

        verify: 'fast' (sizes and sampled-block stamps) | 'full' (sha256 of every file). threads: intra-op
        threads (None: from the process's CPU affinity). max_memory: bytes or '12GB' (None: a safe fraction
        of the available RAM or GPU memory). batch_wait_ms: how long a UNet call may wait to be merged with
        other threads' calls; max_concurrency: calls in flight at once (more wait for a slot)."""
        config = EngineConfig(backend=backend, device=device, max_batch=max_batch, progress=progress, dtype=dtype,
                              cuda_graphs=cuda_graphs, batch_wait_ms=batch_wait_ms, max_concurrency=max_concurrency,
                              max_memory=max_memory)
        return cls(Core.open(folder, config, verify, threads))

    # ---- CycleDiffusion -----------------------------------------------------------------------------
    def encode(self, image, source_prompt, strength: float = 0.8, num_inference_steps: int = 50,
               source_guidance_scale: float = 1, eta: float = 0.1, generator=None, num_images_per_prompt: int = 1,
               clip_skip: int | None = None) -> LatentCode:
        """The DPM-Encoder: image(s) -> LatentCode. Draws n_vae, n0, then one noise per step, as diffusers."""
        params = EditParams(strength, num_inference_steps, 7.5, source_guidance_scale, eta)
        prepared = self.core.prepare(image)
        plan = BatchPlan.make(source_prompt, source_prompt, prepared.tensor.shape[0], num_images_per_prompt)
        with self.core.call() as pool:
            return self.cycle.encode(pool, prepared, plan, params, generator, clip_skip,
                                     guided=source_guidance_scale != 1)

    def decode(self, code: LatentCode, prompt=None, guidance_scale: float = 7.5, output_type: str = "pil",
               prompt_embeds: torch.Tensor | None = None, clip_skip: int | None = None, callback=None,
               callback_steps: int = 1, return_dict: bool = True):
        """Decode a LatentCode with target prompt(s): the DDIM loop with the recorded noises, then the VAE."""
        with self.core.call() as pool:
            result = self.cycle.decode(pool, code, prompt, guidance_scale, output_type, prompt_embeds, clip_skip,
                                       callback, callback_steps)
        return EditOutput(result) if return_dict else (result, None)

    def edit(self, prompt, source_prompt, image=None, strength: float = 0.8, num_inference_steps: int = 50,
             guidance_scale: float = 7.5, source_guidance_scale: float = 1, num_images_per_prompt: int = 1,
             eta: float = 0.1, generator=None, prompt_embeds: torch.Tensor | None = None, output_type: str = "pil",
             return_dict: bool = True, callback=None, callback_steps: int = 1, cross_attention_kwargs=None,
             clip_skip: int | None = None):
        """CycleDiffusionPipeline.__call__, argument for argument: encode with the source prompt, decode with
        the target. With guidance_scale <= 1 the source is unguided (source_guidance_scale ignored), as there."""
        if cross_attention_kwargs:
            raise ValueError("cross_attention_kwargs (LoRA scale, attention processors) cannot change an exported "
                             "engine; export the checkpoint with the LoRA fused instead")
        params = EditParams(strength, num_inference_steps, guidance_scale, source_guidance_scale, eta)
        check_output_args(output_type, callback_steps)
        prepared = self.core.prepare(image)
        plan = BatchPlan.make(prompt, source_prompt, prepared.tensor.shape[0], num_images_per_prompt, prompt_embeds)
        guided = guidance_scale > 1 and source_guidance_scale != 1
        targets = list(plan.target_prompts) if plan.target_prompts is not None else None
        embeds = prompt_embeds[list(plan.embeds_index)] if prompt_embeds is not None else None
        with self.core.call() as pool:
            code = self.cycle.encode(pool, prepared, plan, params, generator, clip_skip, guided, guidance_scale > 1)
            result = self.cycle.decode(pool, code, targets, guidance_scale, output_type, embeds, clip_skip,
                                       callback, callback_steps)
        return EditOutput(result) if return_dict else (result, None)

    # ---- latent-space guidance (paper Section 4.3) ---------------------------------------------------
    def guide(self, prompt, energies=(), start: LatentCode | None = None, height: int | None = None,
              width: int | None = None, num_inference_steps: int = 50, guidance_scale: float = 7.5,
              eta: float = 0.0, generator=None, output_type: str = "pil", callback=None, config=None,
              **langevin) -> GuideOutput:
        """Langevin dynamics on the latent code z, E(z) = Σ λ_i E_i(G(z)) + ½‖z‖², then a full decode of z.

        energies: Energy objects (cyclediff.runtime.methods.guidance.energies). start: a LatentCode (e.g. from
        encode) to start from, else z ~ N(0, I). langevin: LangevinConfig fields (step_size=0.05, n_steps=200,
        guide_steps=10, noise_scale=1, keep_best=None, checkpoint=True), or pass config=LangevinConfig(...)."""
        from cyclediff.runtime.methods.guidance.config import make_config

        return self.guidance.guide(prompt, energies, start, make_config(config, langevin), height, width,
                                   num_inference_steps, guidance_scale, eta, generator, output_type, callback)

    # ---- Pix2Pix-Zero (runtime/methods/pix2pix_zero) ------------------------------------------------
    def invert(self, prompt=None, image=None, num_inference_steps: int = 50, guidance_scale: float = 1,
               generator=None, latents=None, prompt_embeds=None, cross_attention_guidance_amount: float = 0.1,
               output_type: str | None = "pil", return_dict: bool = True, callback=None, callback_steps: int = 1,
               cross_attention_kwargs=None, lambda_auto_corr: float = 20.0, lambda_kl: float = 20.0,
               num_reg_steps: int = 5, num_auto_corr_rolls: int = 5):
        """StableDiffusionPix2PixZeroPipeline.invert, argument for argument -> InversionCode (.latents, .images,
        .save). output_type=None skips decoding .images; cross_attention_guidance_amount is unused, as there."""
        from cyclediff.runtime.methods.pix2pix_zero.regularizer import RegularizerParams

        _no_attention_kwargs(cross_attention_kwargs)
        if latents is not None:
            raise ValueError("invert takes no latents (diffusers ignores them); pass latents as image (B, 4, h, w)")
        reg = RegularizerParams(lambda_auto_corr, lambda_kl, num_reg_steps, num_auto_corr_rolls)
        code = self.pix2pix.invert(prompt, image, num_inference_steps, guidance_scale, generator, prompt_embeds,
                                   output_type, callback, callback_steps, reg)
        return code if return_dict else (code.latents, code.images)

    def edit_direction(self, source_sentences, target_sentences):
        """EditDirection: mean CLIP embeddings of each sentence list (.source_embeds, .target_embeds, (1, 77, D),
        diffusers' get_embeds) and .direction = target − source."""
        return self.pix2pix.edit_direction(source_sentences, target_sentences)

    def pix2pix_zero(self, prompt=None, source_embeds=None, target_embeds=None, height=None, width=None,
                     num_inference_steps: int = 50, guidance_scale: float = 7.5, negative_prompt=None,
                     num_images_per_prompt: int = 1, eta: float = 0.0, generator=None, latents=None,
                     prompt_embeds=None, negative_prompt_embeds=None, cross_attention_guidance_amount: float = 0.1,
                     output_type: str = "pil", return_dict: bool = True, callback=None, callback_steps: int = 1,
                     cross_attention_kwargs=None, clip_skip: int | None = None, trajectory: str = "lockstep"):
        """StableDiffusionPix2PixZeroPipeline.__call__, argument for argument, for one image; latents: an
        InversionCode (or tensor). The guided step needs backend='torch' (amount 0 runs anywhere). trajectory:
        'lockstep' holds one step's reference maps, 'store-all' every step's (as diffusers; same result)."""
        _no_attention_kwargs(cross_attention_kwargs)
        if num_images_per_prompt != 1:
            raise ValueError("num_images_per_prompt must be 1: Pix2Pix-Zero edits one image per call")
        result = self.pix2pix.edit(prompt, source_embeds, target_embeds, height, width, num_inference_steps,
                                   guidance_scale, negative_prompt, eta, generator, latents, prompt_embeds,
                                   negative_prompt_embeds, cross_attention_guidance_amount, output_type, callback,
                                   callback_steps, clip_skip, trajectory)
        return EditOutput(result) if return_dict else (result, None)

    # ---- memory -------------------------------------------------------------------------------------
    def memory_report(self) -> dict:
        """Bytes held in the engine's preallocated buffers (every workspace and the dispatcher's merge
        buffers), by buffer name, plus the total, and under "plan" the memory plan of a default edit."""
        report = self.core.memory_report()
        report["plan"] = self.memory_plan()  # an edit at the native size
        return report

    def memory_plan(self, height: int | None = None, width: int | None = None, batch: int = 1,
                    num_inference_steps: int = 50, strength: float = 0.8, guided: bool = True) -> dict:
        """The memory plan of one edit of height x width pixels (default: the checkpoint's native size): budget,
        bytes per part, the encoder chunk, the peak, and whether it fits. Nothing is allocated."""
        f, size = self.manifest.dims.vae_scale, self.manifest.sample_size
        steps = self.core.table(num_inference_steps, strength, 0.0).num_steps
        return self.planner.report((height or size) // f, (width or size) // f, batch, steps, guided)


def _no_attention_kwargs(cross_attention_kwargs) -> None:
    if cross_attention_kwargs:
        raise ValueError("cross_attention_kwargs (LoRA scale, attention processors) cannot change an exported "
                         "engine; export the checkpoint with the LoRA fused instead")
