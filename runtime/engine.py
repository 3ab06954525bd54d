"""The public API: `Engine.load(DIR)`, then one thin method per operation, each delegating to a method module."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from cyclediff.runtime.core.config import EditParams, EngineConfig
from cyclediff.runtime.core.latent_code import LatentCode
from cyclediff.runtime.core.requests import DecodeRequest, EditRequest, EncodeRequest
from cyclediff.runtime.core.session import Core
from cyclediff.runtime.methods.cycle.method import CycleDiffusion
from cyclediff.runtime.methods.guidance.method import Guidance, GuideOutput
from cyclediff.runtime.methods.pix2pix_zero.method import Pix2PixZero


@dataclasses.dataclass
class EditOutput:
    """Same fields as diffusers' StableDiffusionPipelineOutput (no safety checker runs: always None)."""

    images: Any
    nsfw_content_detected: list[bool] | None = None
    # Not in diffusers: the LatentCode an edit decoded (save it to decode again with other prompts); None for decode.
    code: LatentCode | None = None


# Read-only views of the core that callers and tools use (manifest, backend, device, ...): looked up on the Core,
# never copied, so the Core stays their one owner.
_CORE_VIEWS = frozenset({"folder", "manifest", "config", "backend", "device", "runners", "scheduler", "workspaces",
                         "planner", "dispatcher", "prompts", "space"})


class Engine:
    """Safe to share between threads: every public method may run in any number of threads at once.

    All shared mutable state lives in the Core (runtime/core/session.py, which states the locking rules);
    the method objects (CycleDiffusion, ...) hold nothing but a reference to it. Each public method only builds a
    request (runtime/core/requests.py: checked once, with every front door's rules) and runs it.
    """

    def __init__(self, core: Core):
        self.core = core
        self.cycle = CycleDiffusion(core)
        self.guidance = Guidance(core, self.cycle)
        self.pix2pix = Pix2PixZero(core)
        self.make_encoder, self.make_decoder = self.cycle.make_encoder, self.cycle.make_decoder

    def __getattr__(self, name: str):
        if name in _CORE_VIEWS:
            return getattr(self.__dict__["core"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def load(cls, folder: str | Path, backend: str = "auto", device: str = "cpu", max_batch: int = 16,
             progress: bool = True, dtype: str = "fp32", cuda_graphs: bool = True, verify: str = "fast",
             threads: int | None = None, max_memory: int | str | None = None, batch_wait_ms: float = 5.0,
             max_concurrency: int = 8) -> "Engine":
        """Open an export directory. backend: 'auto' | 'torch' | 'onnxruntime' | 'openvino' | 'tensorrt'; dtype
        'fp32' | 'fp16' | 'bf16'.

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
        return self.run(EncodeRequest(image, source_prompt, params, generator, num_images_per_prompt, clip_skip))

    def decode(self, code: LatentCode, prompt=None, guidance_scale: float = 7.5, output_type: str = "pil",
               prompt_embeds: torch.Tensor | None = None, clip_skip: int | None = None, callback=None,
               callback_steps: int = 1, return_dict: bool = True):
        """Decode a LatentCode with target prompt(s): the DDIM loop with the recorded noises, then the VAE."""
        result = self.run(DecodeRequest(code, prompt, guidance_scale, output_type, prompt_embeds, clip_skip,
                                        callback, callback_steps))
        return result if return_dict else (result.images, None)

    def edit(self, prompt, source_prompt, image=None, strength: float = 0.8, num_inference_steps: int = 50,
             guidance_scale: float = 7.5, source_guidance_scale: float = 1, num_images_per_prompt: int = 1,
             eta: float = 0.1, generator=None, prompt_embeds: torch.Tensor | None = None, output_type: str = "pil",
             return_dict: bool = True, callback=None, callback_steps: int = 1, cross_attention_kwargs=None,
             clip_skip: int | None = None, decoder: "Engine | None" = None):
        """CycleDiffusionPipeline.__call__, argument for argument: encode with the source prompt, decode with
        the target. With guidance_scale <= 1 the source is unguided (source_guidance_scale ignored), as there.

        decoder: another Engine (e.g. a fine-tune of this checkpoint) that decodes the code: translation between
        two models (the paper's Section 4.1). The source prompt is encoded by this engine's text encoder, the
        target by the decoder's; a decoder whose latent space differs is refused (runtime/core/latent_space.py)."""
        params = EditParams(strength, num_inference_steps, guidance_scale, source_guidance_scale, eta)
        result = self.run(EditRequest(prompt, source_prompt, image, params, generator, num_images_per_prompt,
                                      prompt_embeds, output_type, callback, callback_steps, clip_skip,
                                      cross_attention_kwargs=cross_attention_kwargs), decoder=decoder)
        return result if return_dict else (result.images, None)

    def edit_prompts(self, prompts, source_prompt, image, strength: float = 0.8, num_inference_steps: int = 50,
                     guidance_scale: float = 7.5, source_guidance_scale: float = 1, eta: float = 0.1,
                     generator=None, output_type: str = "pil", callback=None, callback_steps: int = 1,
                     clip_skip: int | None = None, decoder: "Engine | None" = None) -> EditOutput:
        """One image, several target prompts, ONE shared encoding: images[i] is prompts[i]'s edit (what the CLIs,
        `--jobs` and the service do with a list of prompts). One prompt: exactly Engine.edit. decoder: as edit's."""
        params = EditParams(strength, num_inference_steps, guidance_scale, source_guidance_scale, eta)
        return self.run(EditRequest(prompts, source_prompt, image, params, generator, output_type=output_type,
                                    callback=callback, callback_steps=callback_steps, clip_skip=clip_skip,
                                    one_encoding=True), decoder=decoder)

    def run(self, request, decoder: "Engine | None" = None):
        """Run a request built by any front door: EncodeRequest -> LatentCode; DecodeRequest, EditRequest
        (runtime/core/requests.py) -> EditOutput; InvertRequest -> InversionCode, Pix2PixZeroRequest -> EditOutput
        (runtime/methods/pix2pix_zero/requests.py); GuideRequest -> GuideOutput. decoder: another Engine that
        decodes an EditRequest's code (see edit)."""
        from cyclediff.runtime.methods.cycle import runs
        from cyclediff.runtime.methods.guidance.requests import GuideRequest
        from cyclediff.runtime.methods.pix2pix_zero.requests import InvertRequest, Pix2PixZeroRequest

        if decoder is not None and not isinstance(decoder, Engine):
            raise TypeError(f"decoder must be an Engine (Engine.load of another export), got {type(decoder)}")
        if decoder is not None and not isinstance(request, EditRequest):
            raise TypeError("decoder= applies to CycleDiffusion edits; decode a LatentCode with the other "
                            "engine's decode() instead")
        if isinstance(request, GuideRequest):
            return self.guidance.guide(request)
        if isinstance(request, InvertRequest):
            return self.pix2pix.invert(request)
        if isinstance(request, Pix2PixZeroRequest):
            return EditOutput(self.pix2pix.edit(request))
        return runs.run(self.core, self.cycle, request, EditOutput, decoder)

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
        from cyclediff.runtime.methods.guidance.requests import GuideRequest

        return self.run(GuideRequest(prompt, energies, start, make_config(config, langevin), height, width,
                                     num_inference_steps, guidance_scale, eta, generator, output_type, callback))

    # ---- Pix2Pix-Zero (runtime/methods/pix2pix_zero) ------------------------------------------------
    def invert(self, prompt=None, image=None, num_inference_steps: int = 50, guidance_scale: float = 1,
               generator=None, latents=None, prompt_embeds=None, cross_attention_guidance_amount: float = 0.1,
               output_type: str | None = "pil", return_dict: bool = True, callback=None, callback_steps: int = 1,
               cross_attention_kwargs=None, lambda_auto_corr: float = 20.0, lambda_kl: float = 20.0,
               num_reg_steps: int = 5, num_auto_corr_rolls: int = 5):
        """StableDiffusionPix2PixZeroPipeline.invert, argument for argument -> InversionCode (.latents, .images,
        .save). output_type=None skips decoding .images; cross_attention_guidance_amount is unused, as there."""
        from cyclediff.runtime.methods.pix2pix_zero.regularizer import RegularizerParams
        from cyclediff.runtime.methods.pix2pix_zero.requests import InvertRequest

        if latents is not None:
            raise ValueError("invert takes no latents (diffusers ignores them); pass latents as image (B, 4, h, w)")
        reg = RegularizerParams(lambda_auto_corr, lambda_kl, num_reg_steps, num_auto_corr_rolls)
        code = self.run(InvertRequest(
            prompt=prompt, image=image, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            generator=generator, prompt_embeds=prompt_embeds, output_type=output_type, callback=callback,
            callback_steps=callback_steps, regularizer=reg, cross_attention_kwargs=cross_attention_kwargs))
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
        from cyclediff.runtime.methods.pix2pix_zero.requests import Pix2PixZeroRequest

        result = self.run(Pix2PixZeroRequest(
            prompt=prompt, source_embeds=source_embeds, target_embeds=target_embeds, height=height, width=width,
            num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            eta=eta, generator=generator, latents=latents, prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds, amount=cross_attention_guidance_amount,
            output_type=output_type, callback=callback, callback_steps=callback_steps, clip_skip=clip_skip,
            trajectory=trajectory, num_images_per_prompt=num_images_per_prompt,
            cross_attention_kwargs=cross_attention_kwargs))
        return result if return_dict else (result.images, None)

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
