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
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Runtime")  # the stub-only package imports too, but has no runtime


def load_runners(folder: Path, manifest: Manifest, backend: str, device: torch.device,
                 dtype: str = "fp32") -> dict[str, ModelRunner]:
    if backend == "onnxruntime":
        if dtype != "fp32":
            raise BackendError("backend 'onnxruntime' runs the fp32 ONNX files; for fp16 use backend='torch' or "
                               "'tensorrt' (export with --trt)")
        from cyclediff.engine.onnxruntime_backend import OrtModel

        manifest.verify_files(folder, models=MODEL_NAMES)
        return {n: OrtModel(folder / manifest.models[n].file, manifest.models[n].spec, device) for n in MODEL_NAMES}
    if backend == "torch":
        return _torch_runners(manifest, device, dtype)
    if backend == "tensorrt":
        from cyclediff.engine.tensorrt_backend import load_plans

        return load_plans(folder, manifest, device)
    raise BackendError(f"unknown backend {backend!r}")


def _torch_runners(manifest: Manifest, device: torch.device, dtype: str) -> dict[str, ModelRunner]:
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
    if dtype == "fp32":
        return {n: TorchModel(graphs[n], manifest.models[n].spec, device) for n in MODEL_NAMES}
    return {n: _fp16_runner(graphs[n], manifest.models[n].spec, device) for n in MODEL_NAMES}


def _fp16_runner(graph: torch.nn.Module, spec, device: torch.device) -> ModelRunner:
    """fp16 model; the VAE parts keep an fp32 copy to re-run when fp16 overflows (a known SD VAE failure)."""
    import copy

    from cyclediff.engine.torch_backend import TorchModel
    from cyclediff.export.models import VAE_DECODER, VAE_ENCODER
    from cyclediff.runtime.precision import GuardedRunner, OverflowGuard

    if spec.name not in (VAE_ENCODER, VAE_DECODER):
        return TorchModel(graph, spec, device, "fp16")
    fp32_copy = copy.deepcopy(graph)  # on the CPU until first needed
    return GuardedRunner(TorchModel(graph, spec, device, "fp16"), lambda: TorchModel(fp32_copy, spec, device),
                         OverflowGuard(spec.name))
