"""TensorRT plans without TensorRT: cache keys, static shapes, manifest entries, and what a plan is tied to.

Everything here is pure Python, so CPU tests exercise it; export/tensorrt_build.py and
engine/tensorrt_backend.py are thin shells around it that need TensorRT and a GPU.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from cyclediff.export.manifest import Manifest, ManifestError
from cyclediff.export.specs import TEXT_ENCODER, UNET, VAE_DECODER, VAE_ENCODER, Dims, ModelSpec

SECTION = "tensorrt"  # manifest.extra[SECTION]
SECTION_SCHEMA = 1
MIN_VERSION = (10, 1)  # execute_async_v3, set_device_memory, device_memory_size_v2, STRONGLY_TYPED
PRECISIONS = ("fp16", "fp32")

Shapes = Mapping[str, tuple[int, ...]]  # input name -> static shape (min = opt = max)


class TensorRTUnavailable(RuntimeError):
    """--trt / backend 'tensorrt' asked for where TensorRT or a GPU is missing; the message says which."""


class PlanMismatch(ManifestError):
    """A plan that must not be loaded here (other TensorRT, other GPU, truncated file); says how to rebuild."""


@dataclasses.dataclass(frozen=True)
class TrtTarget:
    """What a plan is tied to: the exact TensorRT version and the GPU's compute capability ('9.0')."""

    trt_version: str
    compute_capability: str


@dataclasses.dataclass(frozen=True)
class Workload:
    """The batch and size the runtime runs, which the static plans are built for."""

    batch: int = 1  # images per edit (B)
    height: int = 512  # pixels
    width: int = 512
    guided: bool = True  # target guidance on: the decoder's UNet batch is 2B, else B
    encoder_chunk: int = 16  # the Engine's max_batch: the encoder's UNet batch (smaller remainders are padded)

    def __post_init__(self) -> None:
        if min(self.batch, self.height, self.width, self.encoder_chunk) < 1:
            raise ValueError(f"workload sizes must be >= 1, got {self}")


@dataclasses.dataclass(frozen=True)
class PlanEntry:
    """One built plan in manifest.extra['tensorrt']['plans'][model]: a list of these per model."""

    file: str  # relative to the export folder
    sha256: str  # of the plan bytes: a truncated or foreign file is refused before deserializing
    key: str  # plan_key(...): the cache identity
    trt_version: str
    compute_capability: str
    shapes: dict[str, tuple[int, ...]]
    precision: str = "fp16"  # "fp16" | "fp32" (the VAE's overflow fallback)
    onnx_sha256: str = ""  # the source ONNX's identity (tensorrt_build.source_id): fp32 sha256, or fp16 settings too

    @property
    def batch(self) -> int:
        return next(iter(self.shapes.values()))[0]

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PlanEntry":
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        return cls(**{**d, "shapes": {k: tuple(int(x) for x in v) for k, v in d["shapes"].items()}})


def plan_key(onnx_sha256: str, shapes: Shapes, flags: Mapping[str, Any], trt_version: str,
             compute_capability: str) -> str:
    """sha256 of everything that makes a plan: never reuse a plan because 'the file exists'. onnx_sha256: the
    source graph's identity (known before any fp16 conversion, so a full cache hit converts nothing)."""
    payload = {
        "onnx": onnx_sha256,
        "shapes": {k: [int(x) for x in v] for k, v in sorted(shapes.items())},
        "flags": dict(flags),
        "trt": trt_version,
        "sm": compute_capability,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_file(model: str, entry_shapes: Shapes, precision: str, key: str) -> str:
    batch = next(iter(entry_shapes.values()))[0]
    return f"trt/{model}-{precision}-b{batch}-{key[:12]}.plan"


def profiles(specs: Mapping[str, ModelSpec], dims: Dims, w: Workload) -> dict[str, list[dict[str, tuple[int, ...]]]]:
    """Static input shapes per model, one dict per plan, for exactly the batches the runtime sends."""
    batches = {
        TEXT_ENCODER: {1, w.batch},  # the unconditional "" prompt alone, and the B prompts
        UNET: {(2 if w.guided else 1) * w.batch, w.encoder_chunk},  # decoder step; encoder chunk
        VAE_ENCODER: {w.batch},
        VAE_DECODER: {w.batch},
    }
    env = {"H": w.height, "W": w.width, "h": w.height // dims.vae_scale, "w": w.width // dims.vae_scale}
    return {name: [_bind(specs[name], {**env, "B": b}) for b in sorted(bs)] for name, bs in batches.items()}


def _bind(spec: ModelSpec, env: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(env[d] if isinstance(d, str) else d for d in t.shape) for t in spec.inputs}


def read_plans(manifest: Manifest) -> dict[str, tuple[PlanEntry, ...]]:
    """manifest.extra['tensorrt'] -> plans per model; {} when the export has none."""
    section = manifest.extra.get(SECTION)
    if not section:
        return {}
    if section.get("schema") != SECTION_SCHEMA:
        raise ManifestError(f"TensorRT section schema {section.get('schema')!r} is not {SECTION_SCHEMA}; rebuild "
                            "the plans with `cyclediff-export ... --trt`")
    try:
        return {m: tuple(PlanEntry.from_json(e) for e in es) for m, es in section["plans"].items()}
    except (KeyError, TypeError, ValueError) as err:
        raise ManifestError(f"TensorRT section is malformed ({err!r}); rebuild: `cyclediff-export ... --trt`") from err


def with_plans(manifest: Manifest, plans: Mapping[str, tuple[PlanEntry, ...]]) -> Manifest:
    section = {"schema": SECTION_SCHEMA, "plans": {m: [e.to_json() for e in es] for m, es in plans.items()}}
    return dataclasses.replace(manifest, extra={**manifest.extra, SECTION: section})


def rebuild_command(manifest: Manifest, folder: Path) -> str:
    return f"cyclediff-export --ckpt {manifest.checkpoint.get('spec', '<ckpt>')} --out {folder} --trt"


def check_compatible(entry: PlanEntry, target: TrtTarget, hint: str) -> None:
    """A plan runs only on the TensorRT version and GPU architecture it was built with."""
    if entry.trt_version != target.trt_version or entry.compute_capability != target.compute_capability:
        raise PlanMismatch(
            f"TensorRT plan {entry.file} was built for TensorRT {entry.trt_version} on a GPU of compute capability "
            f"{entry.compute_capability}; this machine has TensorRT {target.trt_version} and compute capability "
            f"{target.compute_capability}. Rebuild the plans here: {hint}"
        )


def check_plan_bytes(entry: PlanEntry, data: bytes, hint: str) -> None:
    """A partly written or altered plan must not reach the deserializer (it may crash rather than fail)."""
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise PlanMismatch(f"TensorRT plan {entry.file} does not match its recorded sha256 ({len(data)} bytes: "
                           f"truncated or changed). Rebuild: {hint}")


def require_tensorrt(need_builder: bool = True, device_index: int = 0) -> TrtTarget:
    """The TensorRT and GPU this process would build/run plans with, or TensorRTUnavailable saying what is missing."""
    import torch

    trt, why = _import_tensorrt()
    cuda = torch.cuda.is_available()
    problem = diagnose(trt, cuda, need_builder, why, torch.__version__, torch.version.cuda)
    if problem:
        raise TensorRTUnavailable(problem)
    major, minor = torch.cuda.get_device_capability(device_index)
    return TrtTarget(str(trt.__version__), f"{major}.{minor}")


def _import_tensorrt() -> tuple[Any, str]:
    try:
        import tensorrt
    except ImportError as err:
        return None, str(err)
    return tensorrt, ""


def diagnose(trt: Any, cuda: bool, need_builder: bool, import_error: str = "", torch_version: str = "?",
             torch_cuda: str | None = None) -> str:
    """'' when usable, else one message naming every missing piece and how to get it."""
    missing = []
    if trt is None or not hasattr(trt, "Runtime"):  # a stub-only install imports as an empty namespace package
        missing.append("the TensorRT Python package (pip install 'tensorrt>=10.12', i.e. cyclediff[gpu]; it needs "
                       f"NVIDIA's libraries and a CUDA driver){': ' + import_error if import_error else ''}")
    elif need_builder and not hasattr(trt, "Builder"):
        missing.append("the TensorRT builder (this is a runtime-only/lean TensorRT; install the full 'tensorrt')")
    elif _version(str(getattr(trt, "__version__", "0"))) < MIN_VERSION:
        missing.append(f"TensorRT >= {'.'.join(map(str, MIN_VERSION))} (found {getattr(trt, '__version__', '?')})")
    if not cuda:
        missing.append(f"a CUDA GPU visible to torch (torch {torch_version}, built for CUDA {torch_cuda or 'none'})")
    if not missing:
        return ""
    return "TensorRT engines need " + " and ".join(missing) + "; without them use backend 'onnxruntime' or 'torch'"


def _version(text: str) -> tuple[int, int]:
    parts = (text.split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)
