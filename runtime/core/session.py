"""Core: one loaded export (manifest, model runners, dispatcher, prompts, memory plan) and the steps every method shares."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from cyclediff.export.manifest import TOKENIZER_DIR, Manifest
from cyclediff.export.specs import TEXT_ENCODER, VAE_DECODER, VAE_ENCODER
from cyclediff.runtime.core import backends, images
from cyclediff.runtime.core.batch import BatchPlan
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.config import EngineConfig
from cyclediff.runtime.core.dispatcher import BatchingConfig, ModelDispatcher
from cyclediff.runtime.core.latent_space import LatentSpace
from cyclediff.runtime.core.memory_plan import MemoryBudgetError, MemoryPlanner, budget_bytes
from cyclediff.runtime.core.noise import NoiseSource
from cyclediff.runtime.core.progress import ProgressBars
from cyclediff.runtime.core.prompts import PromptEncoder
from cyclediff.runtime.core.schedule import SchedulerConfig, StepTable, rounded_sqrt, torch_sqrt
from cyclediff.runtime.core.workspaces import Workspaces


class Core:
    """What every editing method (runtime/methods/*) builds on; safe to share between threads.

    Shared mutable state has four owners, each with its locking rule in its docstring: the ModelDispatcher
    (model runners, merge buffers, CUDA graphs; concurrent compatible UNet calls are merged there), the
    Workspaces (each in-flight call's own step buffers), the PromptEncoder (its embedding cache) and the
    ProgressBars (which call's bar is drawn). The rest (manifest, config, step tables) is immutable after load.
    """

    def __init__(self, folder: Path, manifest: Manifest, runners: dict, config: EngineConfig, backend: str):
        self.folder, self.manifest, self.config, self.backend = folder, manifest, config, backend
        self.device = torch.device(config.device)
        self.runners = runners
        self.scheduler = SchedulerConfig.from_json(manifest.scheduler)
        self.space = LatentSpace.of(manifest)  # what this export's codes mean (which other exports decode them)
        # Tables are immutable and a repeat decode asks for the same one: build each (steps, strength, eta) once.
        # openvino rounds the square roots as libcyclediff's OpenVINO executor does (schedule.rounded_sqrt), so
        # one export's Python and C++ edits agree; every other backend rounds as torch (the reference).
        sqrt = rounded_sqrt if backend == "openvino" else torch_sqrt
        self.table = functools.lru_cache(maxsize=32)(functools.partial(StepTable.build, self.scheduler, sqrt=sqrt))
        self.workspaces = Workspaces(self.device, config.max_concurrency)
        # Working memory on top of the loaded weights: every in-flight call's workspace plus ONE model call at a
        # time (the dispatcher runs them one by one), so a call's peak follows from the shapes before it starts.
        self.planner = MemoryPlanner(manifest, backend, config.dtype, budget_bytes(config.device, config.max_memory),
                                     config.max_batch)
        self.dispatcher = ModelDispatcher(runners, self.device, BatchingConfig(config.max_batch, config.batch_wait_ms),
                                          limit=self._merge_limit, graphs=self._graph_device())
        self.prompts = PromptEncoder(folder / TOKENIZER_DIR, self.dispatcher.runner(TEXT_ENCODER), self.device,
                                     manifest.dims.text_states)
        self.progress = ProgressBars(config.progress)

    @classmethod
    def open(cls, folder: str | Path, config: EngineConfig, verify: str, threads: int | None) -> "Core":
        """Read the manifest, check the tokenizer files, choose the backend and load every model runner."""
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            from cyclediff.engine.base import BackendError

            raise BackendError("device='cuda' but no CUDA device is available to torch; use device='cpu'")
        folder = Path(folder)
        manifest = Manifest.load(folder, verify_files=False)
        manifest.verify_files(folder, models=())  # tokenizer files; each backend checks what it reads
        chosen = backends.choose(config.backend, torch.device(config.device), manifest, config.dtype)
        runners = backends.load_runners(folder, manifest, chosen, torch.device(config.device), config.dtype,
                                        verify=verify, threads=threads)
        return cls(folder, manifest, runners, config, chosen)

    def _graph_device(self):
        """On CUDA, UNet calls are captured as CUDA graphs (ONNX Runtime runs on its own stream: eager)."""
        if self.device.type == "cuda" and self.config.cuda_graphs and self.backend in ("torch", "tensorrt"):
            from cyclediff.runtime.core.graph_capture import CudaGraphDevice

            # The dispatcher replays one graph at a time and every graph's output is a buffer allocated outside
            # it, so all graphs can share one memory pool instead of each keeping its own forever.
            shared = torch.cuda.graph_pool_handle()
            return lambda: CudaGraphDevice(self.device, pool=shared)
        return None

    @contextlib.contextmanager
    def call(self):
        """One public call: borrow a workspace (waits while max_concurrency calls are in flight), count as in
        flight for the batching rule. Yields the call's BufferPool."""
        with self.workspaces.borrow() as pool, self.dispatcher.in_flight():
            yield pool

    def _merge_limit(self, sample_shape: tuple[int, ...]) -> int:
        """Most samples one (merged) UNet call may hold at latent (C, h, w), given what the workspaces hold now."""
        try:
            return self.planner.max_unet_batch(sample_shape[-2], sample_shape[-1], self.workspaces.nbytes())
        except MemoryBudgetError:
            return 1  # every call was admitted alone (admit): one sample at a time still fits

    def admit(self, latent_hw: tuple[int, int], batch: int, steps: int, guided: bool, source_guided: bool,
              extra: int = 0) -> int:
        """Refuse, before anything is allocated, a call whose peak exceeds the memory budget even with an
        encoder chunk of 1; otherwise return the encoder chunk the plan chose. extra: see CallShape.extra."""
        plan = self.planner.check_call(*latent_hw, batch, steps, guided, source_guided, extra)
        return plan["chunk"]

    # ---- images in ------------------------------------------------------------------------------------
    def prepare(self, image) -> images.Prepared:
        """Image(s) -> (B, 3, H, W) in [-1, 1] (or latents (B, C, h, w)) on the device, size checked."""
        if image is None:
            raise ValueError("image is required: pass a PIL image, numpy array or torch tensor")
        d = self.manifest.dims
        prepared = images.preprocess(image, d.vae_scale, d.latent_channels)
        self.check_latent_hw(*self.latent_hw(prepared))
        return images.Prepared(prepared.tensor.to(self.device), prepared.is_latent)

    def latent_hw(self, prepared: images.Prepared) -> tuple[int, int]:
        h, w = prepared.tensor.shape[-2:]
        f = 1 if prepared.is_latent else self.manifest.dims.vae_scale
        return h // f, w // f

    def check_latent_hw(self, lh: int, lw: int) -> None:
        m = self.manifest.dims.unet_downscale
        if lh % m or lw % m:
            side = m * self.manifest.dims.vae_scale
            raise images.ImageError(
                f"image gives latents {lw}x{lh} (width x height), not a multiple of {m}; resize the image so both "
                f"sides are multiples of {side} pixels (e.g. {side * max(1, round(lw / m))}x"
                f"{side * max(1, round(lh / m))})"
            )

    def clean_latents(self, pool: BufferPool, prepared: images.Prepared, plan: BatchPlan,
                      noise: NoiseSource) -> torch.Tensor:
        """x0 (B, C, h, w). Pixels: a VAE posterior sample, x0 = sf·(mean + std·n_vae); latents: as given."""
        index = torch.tensor(plan.image_index, device=self.device)
        if prepared.is_latent:
            return prepared.tensor[index].contiguous()
        mean, std = self.vae_moments(pool, prepared.tensor)
        sf = self.manifest.vae_scaling_factor
        if noise.per_item:  # item k draws its own VAE sample from generator k
            n = noise.randn_into(torch.empty((plan.batch, *mean.shape[1:]), device=self.device))
            return sf * (mean[index] + std[index] * n)
        n = noise.randn_into(torch.empty(tuple(mean.shape), device=self.device))
        return (sf * (mean + std * n))[index].contiguous()

    def vae_moments(self, pool: BufferPool, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE posterior's mean and std, each (B, C, H/f, W/f), in `pool`'s buffers."""
        spec_out = self.runners[VAE_ENCODER].spec.outputs
        d = self.manifest.dims
        shape = (pixels.shape[0], d.latent_channels, pixels.shape[2] // d.vae_scale, pixels.shape[3] // d.vae_scale)
        outs = {t.name: pool.get(f"vae_enc.{t.name}", shape) for t in spec_out}
        self.dispatcher.runner(VAE_ENCODER)({"image": pixels}, outs)  # the cancel check first, as every model call
        return outs["mean"], outs["std"]

    # ---- images out -----------------------------------------------------------------------------------
    def finish(self, pool: BufferPool, latents: torch.Tensor, output_type: str):
        """Latents (B, C, h, w) -> output_type ('latent' returns a copy; otherwise VAE-decode and postprocess)."""
        if output_type == "latent":
            return latents.clone()
        d = self.manifest.dims
        b, _, h, w = latents.shape
        pixels = pool.get("vae_dec.image", (b, 3, h * d.vae_scale, w * d.vae_scale))
        self.dispatcher.runner(VAE_DECODER)({"latent": latents / self.manifest.vae_scaling_factor}, {"image": pixels})
        return images.postprocess(pixels, output_type)

    def bar(self, total: int, desc: str):
        """`with core.bar(steps, "decode") as bar:` one call's bar (progress.py: one drawn at a time)."""
        return self.progress.bar(total, desc)

    def memory_report(self) -> dict:
        """Bytes held in preallocated buffers (every workspace and the dispatcher's merge buffers), by name."""
        report = self.workspaces.report()
        for name, size in self.dispatcher.pool.report().items():
            report[name] = report.get(name, 0) + size
        report["total"] = sum(report.values())
        return report
