"""The public API: `Engine.load(DIR)`, then `encode` / `decode` / `edit` with CycleDiffusionPipeline's arguments."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cyclediff.export.manifest import TOKENIZER_DIR, Manifest
from cyclediff.export.models import TEXT_ENCODER, UNET, VAE_DECODER, VAE_ENCODER
from cyclediff.runtime import backends, images
from cyclediff.runtime.batch import BatchPlan
from cyclediff.runtime.buffers import BufferPool
from cyclediff.runtime.config import OUTPUT_TYPES, EditParams, EngineConfig, check_scale
from cyclediff.runtime.decoder import DdimDecoder, TargetText
from cyclediff.runtime.dispatcher import BatchingConfig, ModelDispatcher
from cyclediff.runtime.encoder import DpmEncoder, SourceText
from cyclediff.runtime.latent_code import LatentCode, LatentCodeError
from cyclediff.runtime.memory_plan import MemoryBudgetError, MemoryPlanner, budget_bytes
from cyclediff.runtime.noise import NoiseSource
from cyclediff.runtime.prompts import PromptEncoder
from cyclediff.runtime.schedule import SchedulerConfig, StepTable
from cyclediff.runtime.workspaces import Workspaces


@dataclasses.dataclass
class EditOutput:
    """Same fields as diffusers' StableDiffusionPipelineOutput (no safety checker runs: always None)."""

    images: Any
    nsfw_content_detected: list[bool] | None = None


class Engine:
    """Safe to share between threads: every public method may run in any number of threads at once.

    Shared mutable state has three owners, each with its locking rule in its docstring: the ModelDispatcher
    (model runners, merge buffers, CUDA graphs; concurrent compatible UNet calls are merged there), the
    Workspaces (each in-flight call's own step buffers) and the PromptEncoder (its embedding cache). The rest
    (manifest, config, step tables) is immutable after load.
    """

    def __init__(self, folder: Path, manifest: Manifest, runners: dict, config: EngineConfig, backend: str):
        self.folder, self.manifest, self.config, self.backend = folder, manifest, config, backend
        self.device = torch.device(config.device)
        self.runners = runners
        self.scheduler = SchedulerConfig.from_json(manifest.scheduler)
        # Tables are immutable and a repeat decode asks for the same one: build each (steps, strength, eta) once.
        self._table = functools.lru_cache(maxsize=32)(functools.partial(StepTable.build, self.scheduler))
        self.workspaces = Workspaces(self.device, config.max_concurrency)
        # Working memory on top of the loaded weights: every in-flight call's workspace plus ONE model call at a
        # time (the dispatcher runs them one by one), so a call's peak follows from the shapes before it starts.
        self.planner = MemoryPlanner(manifest, backend, config.dtype, budget_bytes(config.device, config.max_memory),
                                     config.max_batch)
        self.dispatcher = ModelDispatcher(runners, self.device, BatchingConfig(config.max_batch, config.batch_wait_ms),
                                          limit=self._merge_limit, graphs=self._graph_device())
        self.prompts = PromptEncoder(folder / TOKENIZER_DIR, self.dispatcher.runner(TEXT_ENCODER), self.device,
                                     manifest.dims.text_states)

    def _graph_device(self):
        """On CUDA, UNet calls are captured as CUDA graphs (ONNX Runtime runs on its own stream: eager)."""
        if self.device.type == "cuda" and self.config.cuda_graphs and self.backend in ("torch", "tensorrt"):
            from cyclediff.runtime.graph_capture import CudaGraphDevice

            # The dispatcher replays one graph at a time and every graph's output is a buffer allocated outside
            # it, so all graphs can share one memory pool instead of each keeping its own forever.
            shared = torch.cuda.graph_pool_handle()
            return lambda: CudaGraphDevice(self.device, pool=shared)
        return None

    @contextlib.contextmanager
    def _call(self):
        """One public call: borrow a workspace (waits while max_concurrency calls are in flight), count as in
        flight for the batching rule. Yields the call's BufferPool."""
        with self.workspaces.borrow() as pool, self.dispatcher.in_flight():
            yield pool

    def _merge_limit(self, sample_shape: tuple[int, ...]) -> int:
        """Most samples one (merged) UNet call may hold at latent (C, h, w), given what the workspaces hold now."""
        try:
            return self.planner.max_unet_batch(sample_shape[-2], sample_shape[-1], self.workspaces.nbytes())
        except MemoryBudgetError:
            return 1  # every call was admitted alone (_admit): one sample at a time still fits

    def _admit(self, latent_hw: tuple[int, int], batch: int, steps: int, guided: bool, source_guided: bool) -> int:
        """Refuse, before anything is allocated, a call whose peak exceeds the memory budget even with an
        encoder chunk of 1; otherwise return the encoder chunk the plan chose."""
        plan = self.planner.check_call(*latent_hw, batch, steps, guided, source_guided)
        return plan["chunk"]

    def make_encoder(self, pool: BufferPool, chunk: int | None = None) -> DpmEncoder:
        """A DPM-Encoder on `pool` (a borrowed workspace) whose UNet calls go through the dispatcher."""
        return DpmEncoder(self.dispatcher.runner(UNET), pool, chunk or self.config.max_batch)

    def make_decoder(self, pool: BufferPool) -> DdimDecoder:
        return DdimDecoder(self.dispatcher.runner(UNET), pool)

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
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but no CUDA device is available to torch; use device='cpu'")
        folder = Path(folder)
        manifest = Manifest.load(folder, verify_files=False)
        manifest.verify_files(folder, models=())  # tokenizer files; each backend checks what it reads
        chosen = backends.choose(config.backend, torch.device(config.device), manifest)
        runners = backends.load_runners(folder, manifest, chosen, torch.device(config.device), config.dtype,
                                        verify=verify, threads=threads)
        return cls(folder, manifest, runners, config, chosen)

    # ---- encode -------------------------------------------------------------------------------------
    def encode(self, image, source_prompt, strength: float = 0.8, num_inference_steps: int = 50,
               source_guidance_scale: float = 1, eta: float = 0.1, generator=None, num_images_per_prompt: int = 1,
               clip_skip: int | None = None) -> LatentCode:
        """The DPM-Encoder: image(s) -> LatentCode. Draws n_vae, n0, then one noise per step, as diffusers."""
        params = EditParams(strength, num_inference_steps, 7.5, source_guidance_scale, eta)
        prepared = self._prepare(image)
        plan = BatchPlan.make(source_prompt, source_prompt, prepared.tensor.shape[0], num_images_per_prompt)
        with self._call() as pool:
            return self._encode(pool, prepared, plan, params, generator, clip_skip, guided=source_guidance_scale != 1)

    def _encode(self, pool: BufferPool, prepared, plan: BatchPlan, params: EditParams, generator, clip_skip,
                guided: bool, target_guided: bool = False):
        table = self._table(params.num_inference_steps, params.strength, params.eta)
        chunk = self._admit(self._latent_hw(prepared), plan.batch, table.num_steps, target_guided,
                            guided and params.eta > 0)
        noise = NoiseSource(generator, plan.batch, self.device)
        encoder = self.make_encoder(pool, chunk)
        x0 = self._clean_latents(pool, prepared, plan, noise)
        x_T = encoder.noised(x0, table, noise)
        xs = encoder.trajectory(x0, x_T, table, noise)
        z = torch.zeros((table.num_steps, *x0.shape), device=self.device)
        if params.eta > 0:  # at eta = 0 the decoder adds no noise: the source UNet calls are not needed
            text = self._source_text(plan, params, clip_skip, guided)
            with self._bar(table.num_steps * plan.batch * (2 if guided else 1), "encode") as bar:
                encoder.progress = bar
                z = encoder.record(xs, encoder.source_eps(xs, table, text), table)
        return LatentCode(
            x_T=x_T.clone(), noises=z.clone(), timesteps=tuple(table.timesteps.tolist()),
            num_inference_steps=params.num_inference_steps, strength=params.strength, eta=params.eta,
            source_prompts=plan.source_prompts, source_guidance_scale=float(params.source_guidance_scale),
            engine_digest=self.manifest.digest,
        )

    def _source_text(self, plan: BatchPlan, params: EditParams, clip_skip, guided: bool) -> SourceText:
        cond = self.prompts.encode(list(plan.source_prompts), clip_skip)
        # The unconditional text is always "" and never clip-skipped, as in the reference.
        uncond = self.prompts.encode([""]) if guided else None
        return SourceText(cond, uncond, float(params.source_guidance_scale))

    def _prepare(self, image) -> images.Prepared:
        if image is None:
            raise ValueError("image is required: pass a PIL image, numpy array or torch tensor")
        d = self.manifest.dims
        prepared = images.preprocess(image, d.vae_scale, d.latent_channels)
        self._check_latent_hw(*self._latent_hw(prepared))
        return images.Prepared(prepared.tensor.to(self.device), prepared.is_latent)

    def _latent_hw(self, prepared: images.Prepared) -> tuple[int, int]:
        h, w = prepared.tensor.shape[-2:]
        f = 1 if prepared.is_latent else self.manifest.dims.vae_scale
        return h // f, w // f

    def _check_latent_hw(self, lh: int, lw: int) -> None:
        m = self.manifest.dims.unet_downscale
        if lh % m or lw % m:
            side = m * self.manifest.dims.vae_scale
            raise images.ImageError(
                f"image gives latents {lw}x{lh} (width x height), not a multiple of {m}; resize the image so both "
                f"sides are multiples of {side} pixels (e.g. {side * max(1, round(lw / m))}x"
                f"{side * max(1, round(lh / m))})"
            )

    def _clean_latents(self, pool: BufferPool, prepared: images.Prepared, plan: BatchPlan,
                       noise: NoiseSource) -> torch.Tensor:
        """x0 (B, C, h, w). Pixels: a VAE posterior sample, x0 = sf·(mean + std·n_vae); latents: as given."""
        index = torch.tensor(plan.image_index, device=self.device)
        if prepared.is_latent:
            return prepared.tensor[index].contiguous()
        mean, std = self._vae_moments(pool, prepared.tensor)
        sf = self.manifest.vae_scaling_factor
        if noise.per_item:  # item k draws its own VAE sample from generator k
            n = noise.randn_into(torch.empty((plan.batch, *mean.shape[1:]), device=self.device))
            return sf * (mean[index] + std[index] * n)
        n = noise.randn_into(torch.empty(tuple(mean.shape), device=self.device))
        return (sf * (mean + std * n))[index].contiguous()

    def _vae_moments(self, pool: BufferPool, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec_out = self.runners[VAE_ENCODER].spec.outputs
        d = self.manifest.dims
        shape = (pixels.shape[0], d.latent_channels, pixels.shape[2] // d.vae_scale, pixels.shape[3] // d.vae_scale)
        outs = {t.name: pool.get(f"vae_enc.{t.name}", shape) for t in spec_out}
        self.dispatcher.call(VAE_ENCODER, {"image": pixels}, outs)
        return outs["mean"], outs["std"]

    # ---- decode -------------------------------------------------------------------------------------
    def decode(self, code: LatentCode, prompt=None, guidance_scale: float = 7.5, output_type: str = "pil",
               prompt_embeds: torch.Tensor | None = None, clip_skip: int | None = None, callback=None,
               callback_steps: int = 1, return_dict: bool = True):
        """Decode a LatentCode with target prompt(s): the DDIM loop with the recorded noises, then the VAE."""
        with self._call() as pool:
            return self._decode(pool, code, prompt, guidance_scale, output_type, prompt_embeds, clip_skip, callback,
                                callback_steps, return_dict)

    def _decode(self, pool: BufferPool, code: LatentCode, prompt, guidance_scale: float, output_type: str,
                prompt_embeds, clip_skip, callback, callback_steps: int, return_dict: bool):
        check_scale("guidance_scale", guidance_scale)
        _check_output_args(output_type, callback_steps)
        self._check_code(code)
        plan = BatchPlan.make(prompt, list(code.source_prompts), code.batch, 1, prompt_embeds)
        if plan.batch != code.batch:
            raise LatentCodeError(f"{plan.batch} target prompts for a code of {code.batch} images; pass one "
                                  f"prompt or {code.batch}")
        table = self._table(code.num_inference_steps, code.strength, code.eta)
        self._admit(code.latent_hw, code.batch, table.num_steps, guidance_scale > 1, False)
        text = self._target_text(plan, prompt_embeds, guidance_scale, clip_skip)
        with self._bar(table.num_steps, "decode") as bar:
            latents = self.make_decoder(pool).run(code.x_T.to(self.device), code.noises.to(self.device)
                                                  if code.eta > 0 else None, table, text, callback, callback_steps, bar)
        result = self._finish(pool, latents, output_type)
        return EditOutput(result) if return_dict else (result, None)

    def _check_code(self, code: LatentCode) -> None:
        if not isinstance(code, LatentCode):
            raise TypeError(f"code must be a LatentCode (from Engine.encode or LatentCode.load), got {type(code)}")
        if code.engine_digest != self.manifest.digest:
            raise LatentCodeError("this LatentCode was made by another engine export; encode the image again "
                                  "with this engine")
        self._check_latent_hw(*code.latent_hw)
        if code.x_T.shape[1] != self.manifest.dims.latent_channels or code.noises.shape[1:] != code.x_T.shape:
            raise LatentCodeError(f"LatentCode tensors have inconsistent shapes {tuple(code.x_T.shape)} and "
                                  f"{tuple(code.noises.shape)}")

    def _target_text(self, plan: BatchPlan, prompt_embeds, guidance_scale: float, clip_skip) -> TargetText:
        if prompt_embeds is not None:
            cond = prompt_embeds.to(self.device, torch.float32)[list(plan.embeds_index)]
        else:
            cond = self.prompts.encode(list(plan.target_prompts), clip_skip)
        uncond = self.prompts.encode([""]) if guidance_scale > 1 else None
        return TargetText(cond, uncond, float(guidance_scale))

    def _finish(self, pool: BufferPool, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents.clone()
        d = self.manifest.dims
        b, _, h, w = latents.shape
        pixels = pool.get("vae_dec.image", (b, 3, h * d.vae_scale, w * d.vae_scale))
        self.dispatcher.call(VAE_DECODER, {"latent": latents / self.manifest.vae_scaling_factor}, {"image": pixels})
        return images.postprocess(pixels, output_type)

    # ---- edit ---------------------------------------------------------------------------------------
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
        _check_output_args(output_type, callback_steps)
        prepared = self._prepare(image)
        plan = BatchPlan.make(prompt, source_prompt, prepared.tensor.shape[0], num_images_per_prompt, prompt_embeds)
        guided = guidance_scale > 1 and source_guidance_scale != 1
        targets = list(plan.target_prompts) if plan.target_prompts is not None else None
        embeds = prompt_embeds[list(plan.embeds_index)] if prompt_embeds is not None else None
        with self._call() as pool:
            code = self._encode(pool, prepared, plan, params, generator, clip_skip, guided, guidance_scale > 1)
            return self._decode(pool, code, targets, guidance_scale, output_type, embeds, clip_skip, callback,
                                callback_steps, return_dict)

    # ---- misc ---------------------------------------------------------------------------------------
    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, disable=not self.config.progress, leave=False)

    def memory_report(self) -> dict:
        """Bytes held in the engine's preallocated buffers (every workspace and the dispatcher's merge
        buffers), by buffer name, plus the total, and under "plan" the memory plan of a default edit."""
        report = self.workspaces.report()
        for name, size in self.dispatcher.pool.report().items():
            report[name] = report.get(name, 0) + size
        report["total"] = sum(report.values())
        report["plan"] = self.memory_plan()  # type: ignore[assignment]  # an edit at the native size
        return report

    def memory_plan(self, height: int | None = None, width: int | None = None, batch: int = 1,
                    num_inference_steps: int = 50, strength: float = 0.8, guided: bool = True) -> dict:
        """The memory plan of one edit of height x width pixels (default: the checkpoint's native size): budget,
        bytes per part, the encoder chunk, the peak, and whether it fits. Nothing is allocated."""
        f, size = self.manifest.dims.vae_scale, self.manifest.sample_size
        steps = self._table(num_inference_steps, strength, 0.0).num_steps
        return self.planner.report((height or size) // f, (width or size) // f, batch, steps, guided)


def _check_output_args(output_type: str, callback_steps: int) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if isinstance(callback_steps, bool) or not isinstance(callback_steps, int) or callback_steps < 1:
        raise ValueError(f"callback_steps must be a positive integer, got {callback_steps!r}")
