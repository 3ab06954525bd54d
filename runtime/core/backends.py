"""Build the four model runners of an export directory for one backend and device (plus the optional unet_attn:
the UNet with its cross-attention maps as outputs, export/attention_maps.py, where the export has it)."""
from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.export import integrity, ort_cache
from cyclediff.export.attention_maps import UNET_ATTN
from cyclediff.export.integrity import FileGroup
from cyclediff.export.manifest import Manifest, ManifestError
from cyclediff.export.specs import MODEL_NAMES, UNET, VAE_DECODER, VAE_ENCODER
from cyclediff.runtime import verbosity

if TYPE_CHECKING:
    from cyclediff.engine.openvino_static import ExclusiveBuffers


def choose(backend: str, device: torch.device, manifest: Manifest, dtype: str = "fp32") -> str:
    """'auto': TensorRT where its plans and library are present on a GPU, else ONNX Runtime; on the CPU, bf16 runs
    on OpenVINO (the fastest and leanest bf16 path: benchmarks/README.md) and fp32 on ONNX Runtime (OpenVINO fp32
    was 1.07-1.39x faster warm, but held 1.1-1.2x the RSS: a second, packed copy of the weights)."""
    if backend != "auto":
        return backend
    if manifest.torch_only:
        return "torch"
    if device.type == "cuda" and manifest.extra.get("tensorrt") and _has_tensorrt():
        return "tensorrt"
    if device.type == "cpu" and dtype == "bf16":
        return "openvino"
    return "onnxruntime"


def _has_tensorrt() -> bool:
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Runtime")  # the stub-only package imports too, but has no runtime


def threads_for(threads: int | None) -> int:
    """Intra-op threads: as asked, or one per core this process may run on (its CPU affinity, which containers
    and `taskset` narrow; os.cpu_count() would count the whole machine and oversubscribe), and no more than
    the process already asked torch for (OMP_NUM_THREADS, an earlier torch.set_num_threads)."""
    if threads is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(cores, torch.get_num_threads()))
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")
    return threads


def load_runners(folder: Path, manifest: Manifest, backend: str, device: torch.device, dtype: str = "fp32",
                 verify: str = "fast", threads: int | None = None) -> dict[str, ModelRunner]:
    """verify: 'fast' (sizes + sampled-block stamps) | 'full' (sha256 of every byte read); see export/integrity.py.
    threads: see threads_for; the torch backend sets torch's process-wide count (torch.set_num_threads)."""
    integrity.check_mode(verify)
    threads = threads_for(threads)
    if manifest.torch_only and backend != "torch":
        raise BackendError(f"{folder} is a torch-only export (cyclediff-export --torch-only): its graphs were never "
                           f"run in ONNX Runtime and it has no optimized copies; load it with backend='torch', or "
                           f"re-run cyclediff-export into it without --torch-only for {backend!r}")
    if dtype == "bf16" and backend not in ("openvino", "torch"):
        raise BackendError(f"dtype='bf16' runs on backend 'openvino' (or 'torch'), not {backend!r}; use "
                           "backend='openvino' (or 'auto', which picks it for bf16 on the CPU)")
    if backend == "onnxruntime":
        return _ort_runners(folder, manifest, device, dtype, verify, threads)
    if backend == "torch":
        return _torch_runners(manifest, device, dtype, verify, threads)
    if backend == "openvino":
        return _ov_runners(folder, manifest, device, dtype, verify, threads)
    if backend == "tensorrt":
        from cyclediff.engine.tensorrt_backend import load_plans

        return load_plans(folder, manifest, device)
    raise BackendError(f"unknown backend {backend!r}")


def _ort_runners(folder: Path, manifest: Manifest, device: torch.device, dtype: str, verify: str,
                 threads: int) -> dict[str, ModelRunner]:
    from cyclediff.engine.onnxruntime_backend import providers

    target = ort_cache.OrtTarget.here(tuple(providers(device)))

    def fp32(n: str) -> ModelRunner:
        entry = manifest.models[n]
        integrity.check(folder, manifest, FileGroup(f"model {n}", (entry.file, *entry.data_files), entry.sha256),
                        verify)
        return _ort_model(folder, manifest, entry.file, entry.sha256, entry.spec, device, target, verify, threads)

    if dtype == "fp32":
        return _in_parallel(fp32, _names(manifest))
    fp16 = manifest.extra.get("fp16_onnx")
    if not fp16:
        raise BackendError(f"{folder} has no fp16 ONNX graphs; re-run `cyclediff-export ... --fp16` into it")
    runners = {}
    for n in MODEL_NAMES:
        entry, spec = fp16[n], manifest.models[n].spec
        group = FileGroup(f"fp16 graph of {n}", (entry["file"], *entry.get("data_files", [])), entry["sha256"])
        integrity.check(folder, manifest, group, verify, fix="re-run `cyclediff-export ... --fp16` into it")
        model = _ort_model(folder, manifest, entry["file"], entry["sha256"], spec, device, target, verify, threads)
        runners[n] = _guarded(model, spec, lambda n=n: fp32(n))
    return runners


def _ov_runners(folder: Path, manifest: Manifest, device: torch.device, dtype: str, verify: str,
                threads: int) -> dict[str, ModelRunner]:
    """Every graph on OpenVINO's CPU plugin, from the export's IR where it has one for this OpenVINO (else the ONNX
    graph); bf16 VAE parts keep a lazily compiled fp32 twin for the overflow re-run. The VAE's models (twins too)
    share one ExclusiveBuffers: only the one that ran last holds its intermediate buffers."""
    from cyclediff.engine.openvino_backend import require
    from cyclediff.engine.openvino_static import ExclusiveBuffers

    require(device, dtype)
    vae_buffers = ExclusiveBuffers()

    def make(n: str, precision: str = dtype) -> ModelRunner:
        return _ov_model(folder, manifest, n, precision, verify, threads, vae_buffers)

    runners = _in_parallel(make, _names(manifest))
    if dtype == "fp32":
        return runners
    return {n: _guarded(r, r.spec, lambda n=n: make(n, "fp32")) for n, r in runners.items()}


def _ov_model(folder: Path, manifest: Manifest, name: str, dtype: str, verify: str, threads: int,
              vae_buffers: ExclusiveBuffers) -> ModelRunner:
    """The UNet and the VAE on static per-sample models (engine/openvino_static.py), the text encoder dynamic."""
    from cyclediff.engine.openvino_backend import OvModel
    from cyclediff.engine.openvino_static import OvSampleModel
    from cyclediff.export import openvino_ir

    entry = manifest.models[name]
    ir = openvino_ir.lookup(manifest, entry.sha256)
    if ir is None:
        group = FileGroup(f"model {name}", (entry.file, *entry.data_files), entry.sha256)
        path = folder / entry.file
    else:
        group = FileGroup(f"OpenVINO IR of {name}", (ir["file"], *ir["data_files"]), ir["sha256"])
        path = folder / ir["file"]
    integrity.check(folder, manifest, group, verify)
    if name in (UNET, UNET_ATTN):
        return OvSampleModel(path, entry.spec, dtype, threads)
    if name in (VAE_ENCODER, VAE_DECODER):
        return OvSampleModel(path, entry.spec, dtype, threads, vae_buffers)
    return OvModel(path, entry.spec, dtype, threads)


def _names(manifest: Manifest) -> tuple[str, ...]:
    """The four models, and unet_attn when the export has it (`cyclediff-export --attention-maps`; fp32 only)."""
    return MODEL_NAMES + ((UNET_ATTN,) if UNET_ATTN in manifest.models else ())


def _in_parallel(make, names: tuple[str, ...] = MODEL_NAMES) -> dict[str, ModelRunner]:
    """make(name) for every model at once: ONNX Runtime releases the GIL while it builds a session (prepacking
    the UNet's MatMul weights is most of a load), so they overlap; the first error is raised as it is."""
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        futures = {n: pool.submit(make, n) for n in names}
        return {n: f.result() for n, f in futures.items()}


def _ort_model(folder: Path, manifest: Manifest, file: str, sha256: str, spec, device: torch.device,
               target, verify: str, threads: int) -> ModelRunner:
    """The graph ONNX Runtime optimized at export for this target when there is one (opened with optimization
    off), else the exported graph, optimized in memory."""
    from cyclediff.engine.onnxruntime_backend import OrtModel

    saved = ort_cache.lookup(manifest, sha256, target)
    if saved is None:
        return OrtModel(folder / file, spec, device, threads=threads)
    group = FileGroup(f"ONNX Runtime-optimized graph of {spec.name}", (saved["file"], *saved["data_files"]),
                      saved["sha256"])
    integrity.check(folder, manifest, group, verify)
    return OrtModel(folder / saved["file"], spec, device, optimized=True, threads=threads)


def _overflows_in_fp16(spec) -> bool:
    """The SD VAE is known to overflow to NaN in fp16 on some inputs: it gets an fp32 re-run."""
    return spec.name in (VAE_ENCODER, VAE_DECODER)


def _guarded(fp16: ModelRunner, spec, fp32_factory) -> ModelRunner:
    """The VAE parts re-run in fp32 when fp16 output is non-finite; others run as they are."""
    from cyclediff.runtime.core.precision import GuardedRunner, OverflowGuard

    if not _overflows_in_fp16(spec):
        return fp16
    return GuardedRunner(fp16, fp32_factory, OverflowGuard(spec.name))


def _torch_runners(manifest: Manifest, device: torch.device, dtype: str, verify: str,
                   threads: int) -> dict[str, ModelRunner]:
    """The checkpoint's own modules, from the location the manifest records, refused if its bytes changed.

    threads: torch.set_num_threads is process-wide, so the last Engine loaded sets it for every torch user."""
    from cyclediff.engine.torch_backend import TorchModel
    from cyclediff.export import attention_maps

    torch.set_num_threads(threads)
    graphs = checkpoint_graphs(manifest, verify, "backend 'torch' needs", "use backend='onnxruntime'")
    if dtype == "fp32":
        runners: dict[str, ModelRunner] = {n: TorchModel(graphs[n], manifest.models[n].spec, device)
                                           for n in MODEL_NAMES}
    else:
        runners = fp16_runners(graphs, {n: manifest.models[n].spec for n in MODEL_NAMES}, device, dtype)
    if UNET_ATTN in manifest.models:  # the export's wrapper, on the UNet's own parameters (no second copy)
        runners[UNET_ATTN] = TorchModel(attention_maps.graph(graphs[UNET].unet), manifest.models[UNET_ATTN].spec,
                                        device, dtype)
    return runners


def checkpoint_graphs(manifest: Manifest, verify: str, who: str, alternative: str) -> dict[str, torch.nn.Module]:
    """The export wrappers (export/models.py) around the checkpoint the manifest records, refused if its bytes
    changed. who/alternative word the errors: '<who> the checkpoint at P, which is gone; restore it or <alt>'."""
    from cyclediff.export import checkpoint, lora, models, tiny

    rec = manifest.checkpoint
    ref = checkpoint.CheckpointRef(rec["spec"], rec["kind"], Path(rec["path"]), rec.get("config"))
    if ref.kind == "builtin" and not ref.path.exists():
        ref = checkpoint.CheckpointRef(ref.spec, ref.kind, tiny.materialize(ref.spec))  # deterministic rebuild
    if not ref.path.exists():
        raise ManifestError(f"{who} the checkpoint at {ref.path}, which is gone; restore it or {alternative}")
    integrity.check_checkpoint(ref, manifest, verify, f"re-run `cyclediff-export` or {alternative}")
    loras = lora.recorded(manifest, f"re-run `cyclediff-export` or {alternative}")  # fused again, as at export
    with verbosity.quiet_loading():  # transformers' 'Loading weights' bar: shown with --verbose only
        return models.graphs(checkpoint.load(ref, loras))


def fp16_runners(graphs: dict[str, torch.nn.Module], specs: dict, device: torch.device,
                 dtype: str = "fp16") -> dict[str, ModelRunner]:
    """fp16 (or bf16) models; the VAE parts keep an fp32 copy (on the CPU until needed) for the overflow re-run.

    The VAE encoder and decoder wrap ONE module and TorchModel converts in place, so every fp32 copy is made
    before any module is converted, in one deepcopy (its memo keeps the two wrappers on one copied VAE)."""
    import copy

    from cyclediff.engine.torch_backend import TorchModel

    fp32 = copy.deepcopy({n: graphs[n] for n in MODEL_NAMES if _overflows_in_fp16(specs[n])})
    return {n: _guarded(TorchModel(graphs[n], specs[n], device, dtype), specs[n],
                        lambda n=n: TorchModel(fp32[n], specs[n], device)) for n in MODEL_NAMES}
