"""Build the four model runners of an export directory for one backend and device."""
from __future__ import annotations

from pathlib import Path

import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.export.manifest import Manifest, ManifestError
from cyclediff.export.models import MODEL_NAMES


def choose(backend: str, device: torch.device, manifest: Manifest) -> str:
    """'auto': TensorRT where its plans and library are present on a GPU, else ONNX Runtime."""
    if backend != "auto":
        return backend
    if device.type == "cuda" and manifest.extra.get("tensorrt") and _has_tensorrt():
        return "tensorrt"
    return "onnxruntime"


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def load_runners(folder: Path, manifest: Manifest, backend: str, device: torch.device) -> dict[str, ModelRunner]:
    if backend == "onnxruntime":
        from cyclediff.engine.onnxruntime_backend import OrtModel

        manifest.verify_files(folder, models=MODEL_NAMES)
        return {n: OrtModel(folder / manifest.models[n].file, manifest.models[n].spec, device) for n in MODEL_NAMES}
    if backend == "torch":
        return _torch_runners(manifest, device)
    if backend == "tensorrt":
        from cyclediff.engine.tensorrt_backend import load_plans

        return load_plans(folder, manifest, device)
    raise BackendError(f"unknown backend {backend!r}")


def _torch_runners(manifest: Manifest, device: torch.device) -> dict[str, ModelRunner]:
    """The checkpoint's own modules, from the location the manifest records, refused if its bytes changed."""
    from cyclediff.engine.torch_backend import TorchModel
    from cyclediff.export import checkpoint, models, tiny

    rec = manifest.checkpoint
    ref = checkpoint.CheckpointRef(rec["spec"], rec["kind"], Path(rec["path"]), rec.get("config"))
    if ref.kind == "builtin" and not ref.path.exists():
        ref = checkpoint.CheckpointRef(ref.spec, ref.kind, tiny.materialize(ref.spec))  # deterministic rebuild
    if not ref.path.exists():
        raise ManifestError(f"backend 'torch' needs the checkpoint at {ref.path}, which is gone; restore it or "
                            "use backend='onnxruntime'")
    if checkpoint.content_hash(ref) != rec["content_hash"]:
        raise ManifestError(f"checkpoint {ref.path} changed since this export (content hash differs); "
                            "re-run `cyclediff-export` or use backend='onnxruntime'")
    graphs = models.graphs(checkpoint.load(ref))
    return {n: TorchModel(graphs[n], manifest.models[n].spec, device) for n in MODEL_NAMES}
