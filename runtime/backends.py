"""Build the four model runners of an export directory for one backend and device."""
from __future__ import annotations

from pathlib import Path

import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.export.manifest import Manifest, ManifestError, check_files
from cyclediff.export.models import MODEL_NAMES, VAE_DECODER, VAE_ENCODER


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
        return _ort_runners(folder, manifest, device, dtype)
    if backend == "torch":
        return _torch_runners(manifest, device, dtype)
    if backend == "tensorrt":
        from cyclediff.engine.tensorrt_backend import load_plans

        return load_plans(folder, manifest, device)
    raise BackendError(f"unknown backend {backend!r}")


def _ort_runners(folder: Path, manifest: Manifest, device: torch.device, dtype: str) -> dict[str, ModelRunner]:
    from cyclediff.engine.onnxruntime_backend import OrtModel

    manifest.verify_files(folder, models=MODEL_NAMES)
    if dtype == "fp32":
        return {n: OrtModel(folder / manifest.models[n].file, manifest.models[n].spec, device) for n in MODEL_NAMES}
    fp16 = manifest.extra.get("fp16_onnx")
    if not fp16:
        raise BackendError(f"{folder} has no fp16 ONNX graphs; re-run `cyclediff-export ... --fp16` into it")
    runners = {}
    for n in MODEL_NAMES:
        entry, spec = fp16[n], manifest.models[n].spec
        check_files(folder, [entry["file"], *entry.get("data_files", [])], entry["sha256"], f"fp16 graph of {n}",
                    fix="re-run `cyclediff-export ... --fp16` into it")
        runners[n] = _guarded(OrtModel(folder / entry["file"], spec, device), spec,
                              lambda n=n, spec=spec: OrtModel(folder / manifest.models[n].file, spec, device))
    return runners


def _overflows_in_fp16(spec) -> bool:
    """The SD VAE is known to overflow to NaN in fp16 on some inputs: it gets an fp32 re-run."""
    return spec.name in (VAE_ENCODER, VAE_DECODER)


def _guarded(fp16: ModelRunner, spec, fp32_factory) -> ModelRunner:
    """The VAE parts re-run in fp32 when fp16 output is non-finite; others run as they are."""
    from cyclediff.runtime.precision import GuardedRunner, OverflowGuard

    if not _overflows_in_fp16(spec):
        return fp16
    return GuardedRunner(fp16, fp32_factory, OverflowGuard(spec.name))


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
    """fp16 model; the VAE parts keep an fp32 copy (on the CPU until needed) for the overflow re-run."""
    import copy

    from cyclediff.engine.torch_backend import TorchModel

    fp32_copy = copy.deepcopy(graph) if _overflows_in_fp16(spec) else None
    return _guarded(TorchModel(graph, spec, device, "fp16"), spec, lambda: TorchModel(fp32_copy, spec, device))
