"""Memory planning: a call's peak bytes from its shapes, the memory budget, the encoder's chunk, refusals up front.

The model (bytes; e = bytes per activation element: 4 fp32, 2 fp16/bf16; lat = C·h·w·4, one fp32 latent):

  UNet, per sample at latent h×w:  e·(a_unet·W_unet·h·w + s·heads·T²·[scores materialized])
        W_unet: channels of the first UNet level (320 for SD v1); T = h·w / 4**attn_level: tokens of the first
        level with attention; a_unet: live (W_unet, h, w) tensors at the peak, calibrated; s = 2: the scores and
        their softmax, (heads, T, T) each, where the backend materializes them (unfused ONNX attention).
  VAE, per image at pixels H×W = (h·f)×(w·f):  e·(a_vae·W_vae·H·W + s·(h·w)²·[VAE scores materialized])
        W_vae: channels at full pixel size (128 for SD v1); the VAE's mid-block attention has one head at h×w.
  Engine buffers (runtime/methods/cycle/encoder.py, decoder.py, engine.py), B images, K steps, g_s / g_t = 2 when the source /
        target branch is guided, else 1:  lat·[2(K+1)B (xs and the code's copy) + K·B·(3 + g_s + [g_s = 2])
        (eps, z, ztmp, the flat UNet output, gtmp) + (9 + 2g_t)·B (noise, decoder, moments)]
        + chunk·(2·lat + emb) (the chunk's sample, result, text) + g_t·B·emb + 4 pixel-sized copies per image.
  Peak = buffers + max(UNet chunk, decoder UNet batch g_t·B, VAE over B images) + overhead: the phases run one
  after another, and the buffers stay allocated.
  openvino runs every UNet and VAE call sample by sample on a static batch-1 model (engine/openvino_static.py):
  its UNet and VAE activations are one sample's whatever the batch, and the models' packed weights (bf16: half
  the fp32 bytes) are allocated at their first calls (the UNet's and the VAE's at the first call of a size),
  after the budget was taken, so they are a part of the plan.

  Latent-space guidance (runtime/methods/guidance), B codes, K steps of the sampler G inside the Langevin loop,
        g = 2 with classifier-free guidance: autograd through the fp32 torch UNet and VAE decoder (e = 4 whatever
        the engine's dtype) keeps, per UNet sample, 4·g_unet·W_unet·h·w bytes for backward, and per image
        4·(g_vae + 4)·W_vae·H·W (the saved tensors, plus two (2·W_vae, H, W) gradients in flight). With
        checkpoint=True only each step's input x is kept through the forward (K·B·lat) and one step is
        recomputed at a time, after the VAE's backward has freed its tensors:
            K·B·lat + max(g·B·unet, B·vae) + 3·(K + 1)·B·lat (z, ∇z and the next z, noises included);
        without it every step's activations are kept beside the VAE's: K·g·B·unet + B·vae + 3·(K + 1)·B·lat.
        It is a method_extra of the call (beside the final decode, which runs after the loop). The energies'
        own networks (CLIP, a classifier) are the caller's and are not planned.

The weights are not in the budget: they are resident before any call (the budget is taken after loading).
a_unet and a_vae come from peak-RSS measurements of single calls (`python benchmarks/memory.py --calls`):
SD v1.4 architecture, CPU fp32, latent 32² and 64²: onnxruntime (fused attention) 37 and 145 MiB per UNet
sample (a_unet 28.5-29), unfused 1116 MiB at 64² (145 + 2·512 MiB of scores: s ≈ 1.9); torch (SDPA) about
195 MiB at 64² (a_unet ≈ 37); VAE decoder 1026 MiB (onnxruntime) and ~1.6 GiB (torch) at 512² pixels.
The constants below round these up; smaller models (the tiny checkpoints) measure below them.
g_unet and g_vae count the bytes autograd saves (weights excluded; the modules' weights require grad, as the
exported graphs' do), measured with saved-tensor hooks on the SD v1.4 architecture at latent 32² and 64² (meta
device, the fused attention kernel's saved tensors: what CPU and CUDA SDPA keep): g_unet 361 and 357, g_vae 44.5;
the tiny checkpoint's modules measure 117 and 35.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import torch

from cyclediff.export.manifest import Manifest
from cyclediff.export.specs import MODEL_NAMES

MiB, GiB = 1 << 20, 1 << 30
SAFE_FRACTION = 0.75  # of the available RAM / free GPU memory when no max_memory is given
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}


class MemoryBudgetError(ValueError):
    """A call that cannot fit the memory budget, refused before anything is allocated.

    A ValueError, as the other errors a caller fixes by changing the request (image size, prompts, steps) or a
    load argument (max_memory): the CLI prints it as one line. Not a MemoryError: nothing failed to allocate,
    and MemoryError is what Python raises when memory already ran out.

    `field` names the setting to raise, as the library spells it; a front door spells it its own way with
    `renamed` (`--max-memory` in a CLI: `--max-memory='5GiB'` is what a shell passes as --max-memory=5GiB)."""

    field = "max_memory"

    def renamed(self, name: str) -> str:
        """The message with the setting spelled `name` (e.g. "--max-memory")."""
        return str(self).replace(self.field, name)


@dataclasses.dataclass(frozen=True)
class ArchProfile:
    """The architecture sizes that set activation memory, recorded by the export in manifest.extra["memory_profile"].

    The defaults are SD v1's: an export without the record is planned as SD v1 (too much for smaller models)."""

    unet_width: int = 320  # UNet block_out_channels[0]
    attn_level: int = 0  # first UNet level (down block) with attention: its tokens are h·w / 4**attn_level
    attn_heads: int = 8  # attention heads at that level
    vae_width: int = 128  # VAE block_out_channels[0]: the channels at full pixel size

    @classmethod
    def of(cls, unet_config, vae_config) -> ArchProfile:
        kinds = list(unet_config.down_block_types)
        level = next((i for i, k in enumerate(kinds) if "CrossAttn" in k), len(kinds) - 1)
        heads = unet_config.num_attention_heads or unet_config.attention_head_dim  # diffusers' SD v1 naming quirk
        heads = heads[level] if isinstance(heads, (list, tuple)) else heads
        return cls(int(unet_config.block_out_channels[0]), level, int(heads), int(vae_config.block_out_channels[0]))

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> ArchProfile:
        record = manifest.extra.get("memory_profile")
        return cls(**record) if record else cls()


@dataclasses.dataclass(frozen=True)
class Coefficients:
    """Calibrated constants of one backend (see the module docstring)."""

    unet: float  # a_unet: live (W_unet, h, w) tensors per UNet sample at the peak
    vae: float  # a_vae: live (W_vae, H, W) tensors per image in the VAE decoder (the larger VAE half)
    scores: float = 2.0  # s: materialized scores + softmax
    overhead: int = 128 * MiB  # per call: allocator granularity, thread scratch, the text encoder


COEFFICIENTS = {
    "onnxruntime": Coefficients(unet=30, vae=7),
    # SD v1.4, bf16, 2-core EPYC: the static batch-1 UNet model's buffers beside its packed weights were 577 MiB
    # at a 32² latent and 624 MiB at 64² (the plugin reuses them across layers): a fixed part (overhead) and a
    # small per-pixel one; the dynamic VAE decoder took 477 MiB at 512² (a_vae 7.3 at 2 bytes). A 256² edit rose
    # 2.98 GB above the loaded engine: 2.70 GB of it planned before the overhead took the rest (960 MiB).
    # The static VAE decoder (engine/openvino_static.py) measured a_vae 6.0 at 512² (0.81 GB fp32, 0.40 bf16): 8 kept.
    "openvino": Coefficients(unet=30, vae=8, overhead=960 * MiB),
    "torch": Coefficients(unet=38, vae=12),
    "tensorrt": Coefficients(unet=38, vae=12),  # not measured (no GPU here): torch's, fp16 halves e
}


# Latent-space guidance: saved-for-backward (W, h, w) fp32 tensors per UNet sample and per VAE image (see above)
GRAD_UNET, GRAD_VAE = 370, 46


def parse_bytes(value: int | str) -> int:
    """12 * 2**30, "12GB" (10**9), "12GiB" (2**30), "512MiB", "1.5 GB" -> bytes (> 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"max_memory must be bytes (int) or a string like '12GB' / '512MiB', got {value!r}")  # noqa: TRY004 -- one error type for callers
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", value, re.IGNORECASE)
        if match is None:
            raise ValueError(f"max_memory {value!r} is not a size; write e.g. '12GB', '12GiB' or '512MiB'")
        number, unit = float(match.group(1)), (match.group(2) or "").upper()
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"max_memory must be positive, got {value!r}")
    return size


def budget_bytes(device: str | torch.device, max_memory: int | str | None) -> int:
    """max_memory parsed; None: SAFE_FRACTION of the free GPU memory (cuda) or of the available RAM (cpu)."""
    if max_memory is not None:
        return parse_bytes(max_memory)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(SAFE_FRACTION * free)
    return int(SAFE_FRACTION * available_ram())


def available_ram() -> int:
    """/proc/meminfo's MemAvailable, capped by this cgroup's memory.max - memory.current when it has a limit."""
    available = _meminfo_available()
    cgroup = _cgroup_headroom()
    return min(available, cgroup) if cgroup is not None else available


def _meminfo_available() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/meminfo has no MemAvailable; pass max_memory= explicitly")


def _cgroup_headroom(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """cgroup v2 limit minus usage for this process's group; None where there is no limit or no cgroup v2."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            rel = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        group = root / rel.lstrip("/")
        limit = (group / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((group / "memory.current").read_text()))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


@dataclasses.dataclass(frozen=True)
class CallShape:
    """One call's sizes: latent h×w, B images (prompts × images per prompt), K encoder steps, guidance."""

    latent_h: int
    latent_w: int
    batch: int
    steps: int
    guided: bool  # target branch guided (guidance_scale > 1): decoder UNet batch 2B
    source_guided: bool = False  # source branch guided: 2·K·B encoder UNet samples
    extra: int = 0  # a method's own working bytes beside the UNet calls (Pix2Pix-Zero's guided step, backward)


@dataclasses.dataclass(frozen=True)
class MemoryPlanner:
    """Peak bytes of a call on one Engine, against `budget` (bytes of working memory on top of the weights)."""

    manifest: Manifest
    backend: str
    dtype: str
    budget: int
    max_batch: int = 16  # the Engine's encoder chunk cap

    @property
    def profile(self) -> ArchProfile:
        return ArchProfile.from_manifest(self.manifest)

    @property
    def coefficients(self) -> Coefficients:
        return COEFFICIENTS.get(self.backend, COEFFICIENTS["torch"])

    @property
    def unet_scores_materialized(self) -> bool:
        """Unfused ONNX attention holds (heads, T, T) scores; torch's SDPA and fused ORT/TensorRT kernels do not."""
        return self.backend == "onnxruntime" and not (self.manifest.extra.get("ort_attention") or {}).get("unet")

    @property
    def vae_scores_materialized(self) -> bool:
        # Exports before the VAE fusion (export/sdpa_fusion.py) record no "vae_decoder" entry: materialized.
        return self.backend == "onnxruntime" and not (self.manifest.extra.get("ort_attention") or {}).get("vae_decoder")

    @property
    def per_sample(self) -> bool:
        """The UNet and the VAE run one sample at a time (openvino): a merged call holds one sample's activations,
        and only the VAE model that ran last holds its buffers (engine/openvino_static.py)."""
        return self.backend == "openvino"

    def packed_bytes(self) -> int:
        """openvino: the weights the plugin packs on each model's first call (the UNet's static model, the text
        encoder, the VAE), from the export's recorded file sizes; bf16 halves them."""
        if self.backend != "openvino":
            return 0
        sizes = (self.manifest.extra.get("integrity") or {}).get("files") or {}
        weights = sum(int(sizes.get(f, {}).get("size", 0)) for name in MODEL_NAMES
                      for f in (self.manifest.models[name].file, *self.manifest.models[name].data_files))
        return weights // 2 if self.dtype == "bf16" else weights

    def _elem(self) -> int:
        return 2 if self.dtype in ("fp16", "bf16") else 4

    def unet_sample_bytes(self, h: int, w: int) -> int:
        """One UNet sample's activations at latent h×w (fp32 sample/output buffers are counted separately)."""
        p, c = self.profile, self.coefficients
        tokens = h * w / 4 ** p.attn_level
        scores = c.scores * p.attn_heads * tokens ** 2 if self.unet_scores_materialized else 0.0
        return int(self._elem() * (c.unet * p.unet_width * h * w + scores))

    def vae_image_bytes(self, h: int, w: int) -> int:
        """One image's VAE activations (decoder, the larger half) for latent h×w."""
        p, c, f = self.profile, self.coefficients, self.manifest.dims.vae_scale
        scores = c.scores * (h * w) ** 2 if self.vae_scores_materialized else 0.0
        return int(self._elem() * (c.vae * p.vae_width * h * f * w * f + scores))

    def _emb_bytes(self) -> int:
        d = self.manifest.dims
        return 4 * d.text_len * d.text_width  # one (77, D) fp32 text embedding

    def _lat_bytes(self, h: int, w: int) -> int:
        return 4 * self.manifest.dims.latent_channels * h * w

    def chunk_sample_bytes(self, h: int, w: int) -> int:
        """Per sample of an encoder chunk: activations + its sample, result and embedding buffers."""
        return self.unet_sample_bytes(h, w) + 2 * self._lat_bytes(h, w) + self._emb_bytes()

    def _chunk_terms(self, h: int, w: int) -> tuple[int, int]:
        """(fixed, per): an encoder chunk of n samples holds fixed + n·per bytes. Per sample: its activations and
        I/O buffers; where the UNet runs sample by sample (openvino), one sample's activations are fixed and each
        sample adds only its I/O buffers."""
        per = self.chunk_sample_bytes(h, w)
        if not self.per_sample:
            return 0, per
        one = self.unet_sample_bytes(h, w)
        return one, per - one

    def max_unet_batch(self, latent_h: int, latent_w: int, reserved: int = 0) -> int:
        """Largest UNet batch that fits the budget minus `reserved` (bytes the caller already holds), capped by
        max_batch. Raises MemoryBudgetError when not even one sample fits."""
        chunk_fixed, per = self._chunk_terms(latent_h, latent_w)
        fixed = self.coefficients.overhead + reserved + self.packed_bytes() + chunk_fixed
        fits = (self.budget - fixed) // per
        if fits < 1:
            raise self._refusal(CallShape(latent_h, latent_w, 1, 1, False), fixed + per)
        return int(min(self.max_batch, fits))

    def buffer_bytes(self, s: CallShape) -> int:
        """The engine's preallocated buffers for this call, chunk buffers excluded (see the module docstring)."""
        lat, k, b = self._lat_bytes(s.latent_h, s.latent_w), s.steps, s.batch
        gs, gt = (2 if s.source_guided else 1), (2 if s.guided else 1)
        latents = 2 * (k + 1) * b + k * b * (3 + gs + (gs == 2)) + (9 + 2 * gt) * b
        pixels = 4 * b * 3 * s.latent_h * s.latent_w * 4 * self.manifest.dims.vae_scale ** 2
        return lat * latents + gt * b * self._emb_bytes() + pixels

    def guidance_bytes(self, latent_h: int, latent_w: int, batch: int, steps: int, guided: bool,
                       checkpoint: bool = True) -> int:
        """Working bytes of latent-space guidance's Langevin loop (a CallShape.extra): `batch` codes through a
        `steps`-step differentiable sampler, backward included (the module docstring's model)."""
        p, f = self.profile, self.manifest.dims.vae_scale
        lat = self._lat_bytes(latent_h, latent_w)
        unet = (2 if guided else 1) * batch * 4 * GRAD_UNET * p.unet_width * latent_h * latent_w
        vae = batch * 4 * (GRAD_VAE + 4) * p.vae_width * latent_h * f * latent_w * f
        codes = 3 * (steps + 1) * batch * lat
        if checkpoint:
            return steps * batch * lat + max(unet, vae) + codes
        return steps * unet + vae + codes

    def plan(self, s: CallShape) -> dict[str, int]:
        """Bytes of each part and the peak, for the largest chunk that fits (no check against the budget)."""
        buffers = self.buffer_bytes(s)
        samples = s.steps * s.batch * (2 if s.source_guided else 1)
        packed = self.packed_bytes()
        chunk_fixed, per = self._chunk_terms(s.latent_h, s.latent_w)
        free = self.budget - self.coefficients.overhead - buffers - packed - chunk_fixed
        chunk = max(1, min(self.max_batch, samples, free // per if free > 0 else 1))
        one = self.unet_sample_bytes(s.latent_h, s.latent_w)
        decoder = (1 if self.per_sample else (2 if s.guided else 1) * s.batch) * one
        encoder = chunk_fixed + chunk * per
        vae = (1 if self.per_sample else s.batch) * self.vae_image_bytes(s.latent_h, s.latent_w)
        parts = {"buffers": buffers, "encoder_unet": int(encoder), "decoder_unet": decoder, "vae": vae,
                 "overhead": self.coefficients.overhead}
        if packed:
            parts["packed_weights"] = packed
        if s.extra:
            parts["method_extra"] = s.extra
        peak = buffers + packed + max(parts["encoder_unet"], decoder, vae, s.extra) + parts["overhead"]
        return {**parts, "chunk": int(chunk), "peak": int(peak), "budget": self.budget}

    def check_call(self, latent_h: int, latent_w: int, batch: int, steps: int, guided: bool,
                   source_guided: bool = False, extra: int = 0) -> dict[str, int]:
        """The plan of a call, or MemoryBudgetError (before anything is allocated) when its peak exceeds the
        budget even with an encoder chunk of 1. steps: the encoder's K (the steps the edit runs). extra: a
        method's own working bytes, held apart from the UNet calls (CallShape.extra)."""
        shape = CallShape(latent_h, latent_w, batch, steps, guided, source_guided, extra)
        plan = self.plan(shape)
        if plan["peak"] > self.budget:
            raise self._refusal(shape, plan["peak"])
        return plan

    def report(self, latent_h: int, latent_w: int, batch: int = 1, steps: int = 40, guided: bool = True,
               source_guided: bool = False) -> dict[str, Any]:
        """The plan as a dict for engine.memory_report(): budget, per-part bytes, chunk, peak, and the model."""
        plan = self.plan(CallShape(latent_h, latent_w, batch, steps, guided, source_guided))
        return {**plan, "fits": plan["peak"] <= self.budget, "backend": self.backend, "dtype": self.dtype,
                "latent_hw": (latent_h, latent_w), "batch": batch, "steps": steps,
                "unet_sample": self.unet_sample_bytes(latent_h, latent_w),
                "unet_scores_materialized": self.unet_scores_materialized,
                "profile": self.profile.to_json()}

    def _refusal(self, s: CallShape, needed: int) -> MemoryBudgetError:
        f = self.manifest.dims.vae_scale
        what = (f"a {s.latent_w * f}x{s.latent_h * f} (width x height) edit, latents {s.latent_h}x{s.latent_w}, "
                f"batch {s.batch}, {s.steps} steps")
        return MemoryBudgetError(
            f"{what} needs about {fmt_bytes(needed)} of working memory, over this Engine's budget of "
            f"{fmt_bytes(self.budget)}, even one UNet sample at a time; use a smaller image, fewer prompts or "
            f"images per prompt, fewer steps, or a larger max_memory budget "
            f"(e.g. max_memory='{math.ceil(needed / GiB) + 1}GiB') if the machine has it")


def fmt_bytes(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"
