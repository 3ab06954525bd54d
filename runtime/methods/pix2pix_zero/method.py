"""Pix2Pix-Zero on the core: invert (regularized DDIM inversion), edit_direction, edit (cross-attention guidance)."""
from __future__ import annotations

import functools
import threading

import torch

from cyclediff.engine.base import BackendError
from cyclediff.export.attention_maps import UNET_ATTN
from cyclediff.export.specs import UNET
from cyclediff.runtime.core import backends
from cyclediff.runtime.core.batch import BatchPlan
from cyclediff.runtime.core.model_gate import ModelGate
from cyclediff.runtime.core.noise import NoiseSource
from cyclediff.runtime.core.session import Core
from cyclediff.runtime.methods.pix2pix_zero import directions, text
from cyclediff.runtime.methods.pix2pix_zero.attention_guidance import GuidanceText, GuidedEditor, TorchUNet, plain_edit
from cyclediff.runtime.methods.pix2pix_zero.backward_plan import guided_step_bytes
from cyclediff.runtime.methods.pix2pix_zero.code import InversionCode, check_code
from cyclediff.runtime.methods.pix2pix_zero.directions import EditDirection
from cyclediff.runtime.methods.pix2pix_zero.inverse_schedule import InverseTable
from cyclediff.runtime.methods.pix2pix_zero.inversion import invert_latents
from cyclediff.runtime.methods.pix2pix_zero.reference_maps import GraphMaps
from cyclediff.runtime.methods.pix2pix_zero.requests import InvertRequest, Pix2PixZeroRequest


class Pix2PixZero:
    """Stateless on top of the Core (but for a torch UNet loaded once, under a lock, for forward-only backends
    with unet_attn), so one instance serves every thread (the torch UNet's attn2 probes are
    per thread; see attention_probe). `last_editor` is introspection for benchmarks and tests only: with
    concurrent edits it is whichever started last."""

    def __init__(self, core: Core):
        self.core = core
        self.inverse_table = functools.lru_cache(maxsize=8)(functools.partial(InverseTable.build, core.scheduler))
        self.last_editor: GuidedEditor | None = None  # its peak_map_bytes: the memory comparison
        self._lock = threading.Lock()
        self._gradient_unet: TorchUNet | None = None  # forward-only backends with unet_attn: see _checkpoint_unet

    @property
    def text_shape(self) -> tuple[int, int]:
        d = self.core.manifest.dims
        return d.text_len, d.text_width

    # ---- invert -------------------------------------------------------------------------------------
    def invert(self, r: InvertRequest) -> InversionCode:
        """Image -> InversionCode: VAE sample (one draw), then N regularized inverse DDIM steps."""
        core = self.core
        text.one_prompt(r.prompt, r.prompt_embeds, self.text_shape)
        generator = _one_generator(r.generator)
        table = self.inverse_table(r.num_inference_steps)
        prepared = core.prepare(r.image)
        if prepared.tensor.shape[0] != 1:
            raise ValueError(f"image holds {prepared.tensor.shape[0]} images; Pix2Pix-Zero inverts one per call")
        prompt, prompt_embeds, guidance_scale, output_type = r.prompt, r.prompt_embeds, r.guidance_scale, r.output_type
        guided = guidance_scale > 1
        with core.call() as pool:
            core.admit(core.latent_hw(prepared), 1, table.num_steps, guided, False)
            x0 = core.clean_latents(pool, prepared, BatchPlan.make("", "", 1, 1), NoiseSource(generator, 1,
                                                                                            core.device))
            embeds = text.embeddings(core.prompts, prompt, prompt_embeds, None, None, guided, None, core.device)
            with core.bar(table.num_steps, "invert") as bar:
                x_T = invert_latents(core.dispatcher.runner(UNET), x0, table, embeds, guidance_scale, r.regularizer,
                                     generator, r.callback, r.callback_steps, bar)
            images = core.finish(pool, x_T, output_type) if output_type is not None else None
        caption = prompt if isinstance(prompt, str) else (prompt[0] if prompt is not None else "")
        return InversionCode(x_T.clone(), caption, r.num_inference_steps, core.manifest.digest, images)

    # ---- directions ---------------------------------------------------------------------------------
    def edit_direction(self, source_sentences: list[str], target_sentences: list[str]) -> EditDirection:
        """Mean CLIP embeddings of each sentence bank (diffusers' get_embeds); .direction = target − source."""
        encode = self.core.prompts.encode
        return EditDirection(directions.mean_embeds(source_sentences, encode, "source"),
                             directions.mean_embeds(target_sentences, encode, "target"))

    # ---- edit ---------------------------------------------------------------------------------------
    def edit(self, r: Pix2PixZeroRequest):
        """StableDiffusionPix2PixZeroPipeline.__call__ for one image: reference and guided trajectories from
        the same latents, the guided one with the direction added to the caption embedding."""
        core = self.core
        text.one_prompt(r.prompt, r.prompt_embeds, self.text_shape)
        generator = _one_generator(r.generator)
        source, target = directions.check_embeds(r.source_embeds, r.target_embeds, self.text_shape)
        guidance_scale, eta, amount, trajectory = r.guidance_scale, r.eta, r.amount, r.trajectory
        table = core.table(r.num_inference_steps, 1.0, eta)
        # Refused before any work on a forward-only backend without the export's unet_attn graph.
        unet, reference = self._guidance_unets() if amount != 0 else (None, None)
        guided = guidance_scale > 1
        noise = NoiseSource(generator, 1, core.device)
        with core.call() as pool:
            x_T = self._start_latents(r.latents, r.height, r.width, noise)
            extra = 0 if unet is None else guided_step_bytes(
                unet.module.unet, 2 if guided else 1, tuple(x_T.shape[1:]), self.text_shape, unet.compute,
                1 if trajectory == "lockstep" else table.num_steps)
            core.admit(tuple(x_T.shape[2:]), 1, table.num_steps, guided, False, extra)
            noises = _step_noises(noise, x_T, 2 * table.num_steps) if eta > 0 else None
            embeds = text.embeddings(core.prompts, r.prompt, r.prompt_embeds, r.negative_prompt,
                                     r.negative_prompt_embeds, guided, r.clip_skip, core.device)
            edit = embeds.clone()
            edit[1:2] += directions.construct_direction(source, target).to(core.device)
            words = GuidanceText(embeds, edit, float(guidance_scale))
            forward = core.dispatcher.runner(UNET)
            with core.bar(table.num_steps, "pix2pix-zero") as bar:
                if unet is None:
                    x = plain_edit(forward, x_T, table, words, noises, bar)
                else:
                    self.last_editor = GuidedEditor(unet, forward, amount, trajectory, reference,
                                                    ModelGate(core.dispatcher))
                    x = self.last_editor.run(x_T, table, words, noises, r.callback, r.callback_steps, bar)
            return core.finish(pool, x, r.output_type)

    def _start_latents(self, latents, height, width, noise: NoiseSource) -> torch.Tensor:
        """(1, C, h, w) on the device: the inversion's latents, or (latents None) a fresh N(0, I) draw."""
        core, d = self.core, self.core.manifest.dims
        asked = None
        if height is not None or width is not None:
            size = core.manifest.sample_size
            asked = ((height or size) // d.vae_scale, (width or size) // d.vae_scale)
            core.check_latent_hw(*asked)
        if latents is None:
            hw = asked or (core.manifest.sample_size // d.vae_scale,) * 2
            return noise.randn_into(torch.empty((1, d.latent_channels, *hw), device=core.device))
        if isinstance(latents, torch.Tensor):  # a bare tensor carries no digest: only its shape can be checked
            latents = InversionCode(latents, "", 0, core.manifest.digest)
        if not isinstance(latents, InversionCode):
            raise TypeError(f"latents must be an InversionCode (Engine.invert) or a tensor, got {type(latents)}")
        check_code(latents, core.manifest, asked)
        core.check_latent_hw(*latents.latent_hw)
        if latents.latents.shape[0] != 1:
            raise ValueError(f"latents hold {latents.latents.shape[0]} images; Pix2Pix-Zero edits one per call")
        return latents.latents.to(core.device, torch.float32)

    def _guidance_unets(self) -> tuple[TorchUNet, GraphMaps | None]:
        """The torch UNet of the gradient step, and the reference pass: the export's unet_attn graph on this
        engine's backend when the export has it (None: probes on the torch UNet)."""
        from cyclediff.engine.torch_backend import TorchModel

        core = self.core
        maps = GraphMaps(core.dispatcher.runner(UNET_ATTN), core.manifest.dims) if UNET_ATTN in core.runners \
            else None
        runner = core.runners[UNET]
        if isinstance(runner, TorchModel):
            return TorchUNet(runner.module, runner.compute), maps
        if maps is None:
            raise BackendError(
                f"Pix2Pix-Zero's cross-attention guidance needs the gradient of the UNet's input, which backend "
                f"{core.backend!r} (forward only) cannot compute; load the engine with backend='torch' "
                "(cyclediff-run --backend torch), or pass cross_attention_guidance_amount=0 (no guidance), or, "
                "for backend='onnxruntime' or 'openvino', re-export with `cyclediff-export --attention-maps` (the "
                "reference pass then runs on that backend and only the gradient step on a torch UNet loaded from "
                "the checkpoint). "
                "Inversion runs on every backend.")
        return self._checkpoint_unet(), maps

    def _checkpoint_unet(self) -> TorchUNet:
        """The checkpoint's UNet as a torch module (fp32, loaded on first use, then kept) for the gradient step of
        a forward-only backend whose export has unet_attn; the rest of the edit stays on that backend."""
        with self._lock:
            if self._gradient_unet is None:
                graphs = backends.checkpoint_graphs(
                    self.core.manifest, "fast", "Pix2Pix-Zero's guided step computes the UNet's input gradient "
                    "with torch, which needs", "pass cross_attention_guidance_amount=0 (no guidance)")
                self._gradient_unet = TorchUNet(graphs[UNET].to(self.core.device).eval(), torch.float32)
            return self._gradient_unet


def _step_noises(noise: NoiseSource, like: torch.Tensor, n: int) -> torch.Tensor:
    """(n, 1, C, h, w) DDIM variance noises in draw order: the reference loop's K, then the edit loop's K."""
    out = torch.empty((n, *like.shape), device=like.device)
    for i in range(n):
        noise.randn_into(out[i])
    return out


def _one_generator(generator) -> torch.Generator | None:
    """The regularizer's torch.randint takes one CPU generator (diffusers fails on a list or a GPU one)."""
    if isinstance(generator, list):
        if len(generator) != 1:
            raise ValueError(f"got {len(generator)} generators; Pix2Pix-Zero takes one (one image per call)")
        generator = generator[0]
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise ValueError("generator must be one CPU torch.Generator: the inversion's roll shifts are drawn on "
                         "the CPU, as in diffusers")
    return generator
