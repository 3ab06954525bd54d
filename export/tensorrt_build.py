"""`cyclediff-export --trt`: fp16 ONNX -> static-shape TensorRT plans, cached by content key, recorded in the manifest.

One code path for TensorRT 10.x and 11.x: the network is STRONGLY_TYPED (precision comes from the fp16 ONNX
graph, no BuilderFlag.FP16), I/O is by tensor name, and every plan has one profile with min = opt = max.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cyclediff.export import fp16
from cyclediff.export.atomic_files import atomic_write_bytes
from cyclediff.export.manifest import Manifest, sha256_files
from cyclediff.export.onnx_export import ExportError
from cyclediff.export.plan_cache import (
    PlanEntry,
    Shapes,
    TrtTarget,
    Workload,
    plan_file,
    plan_key,
    profiles,
    read_plans,
    require_tensorrt,
    with_plans,
)
from cyclediff.export.specs import MODEL_NAMES, VAE_DECODER, VAE_ENCODER

if TYPE_CHECKING:
    import tensorrt as trt

FP32_FALLBACK = (VAE_ENCODER, VAE_DECODER)  # fp16 VAEs can overflow to NaN: an fp32 plan to re-run with


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    """Builder options. What changes a plan reaches its key: builder flags via `flags()`, fp16 settings via
    `source_id`; the timing cache only speeds builds up."""

    workspace_bytes: int = 8 << 30  # cap on tactic scratch memory
    optimization_level: int = 3  # 0..5: higher searches more tactics (slower build)
    fp32_vae_fallback: bool = True
    fp16_settings: fp16.Fp16Settings = fp16.Fp16Settings()
    timing_cache_dir: Path | None = None  # None: $CYCLEDIFF_CACHE/tensorrt (kept across exports)

    def flags(self, precision: str) -> dict[str, Any]:
        return {"strongly_typed": True, "precision": precision, "workspace_bytes": self.workspace_bytes,
                "optimization_level": self.optimization_level}


def build_all(folder: Path, manifest: Manifest, workload: Workload, settings: BuildSettings = BuildSettings(),
              say: Callable[[str], None] = print) -> Manifest:
    """Build (or reuse, by key) every plan the workload needs; return the manifest with its TensorRT section.

    The caller saves the returned manifest (atomically) once everything is on disk.
    """
    target = require_tensorrt(need_builder=True)
    old = {e.key: e for es in read_plans(manifest).values() for e in es}
    shapes = profiles({n: manifest.models[n].spec for n in MODEL_NAMES}, manifest.dims, workload)
    plans = {name: _model_plans(folder, manifest, name, shapes[name], settings, target, old, say)
             for name in MODEL_NAMES}
    _remove_stale(folder, plans)
    return with_plans(manifest, plans)


def _model_plans(folder: Path, manifest: Manifest, name: str, shapes: list[dict[str, tuple[int, ...]]],
                 settings: BuildSettings, target: TrtTarget, old: dict[str, PlanEntry],
                 say: Callable[[str], None]) -> tuple[PlanEntry, ...]:
    """One model's plans, reused by key where possible. The key names the plan's ONNX by its source (the fp32
    graph's recorded sha256, plus the fp16 settings and converter), so the fp16 conversion, minutes for a large
    UNet, runs only when some plan of that precision must actually be built."""
    out = []
    for precision in _precisions(name, settings):
        source = source_id(manifest, name, precision, settings)
        onnx: Path | None = None
        for s in shapes:
            key = plan_key(source, s, settings.flags(precision), target.trt_version, target.compute_capability)
            reuse = _reusable(folder, old.get(key))
            if reuse is not None:
                say(f"reuse TensorRT plan {reuse.file}")
                out.append(reuse)
                continue
            onnx = onnx or _onnx(folder, manifest, name, precision, settings)
            out.append(_build(folder, name, precision, onnx, s, key, source, settings, target, say))
    return tuple(out)


def _precisions(name: str, settings: BuildSettings) -> tuple[str, ...]:
    """fp16 for every model; the VAEs also keep an fp32 plan to re-run with where fp16 overflows."""
    return ("fp16", "fp32") if settings.fp32_vae_fallback and name in FP32_FALLBACK else ("fp16",)


def source_id(manifest: Manifest, name: str, precision: str, settings: BuildSettings) -> str:
    """Identity of the ONNX a plan is built from, known without converting: the fp32 graph's recorded sha256,
    and for fp16 also the conversion settings and the converter's own code."""
    fp32 = manifest.models[name].sha256
    if precision == "fp32":
        return fp32
    payload = {"fp32": fp32, "fp16": settings.fp16_settings.to_json(),
               "converter": hashlib.sha256(Path(fp16.__file__).read_bytes()).hexdigest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _onnx(folder: Path, manifest: Manifest, name: str, precision: str, settings: BuildSettings) -> Path:
    """The ONNX file to build from; converts the fp32 graph to fp16 (once per model and build)."""
    fp32 = folder / manifest.models[name].file
    if precision == "fp32":
        return fp32
    out = folder / "trt" / f"{name}.fp16.onnx"
    fp16.convert_file(fp32, out, settings.fp16_settings)
    return out


def _reusable(folder: Path, entry: PlanEntry | None) -> PlanEntry | None:
    if entry is not None and (folder / entry.file).is_file() and sha256_files([folder / entry.file]) == entry.sha256:
        return entry
    return None


def _build(folder: Path, name: str, precision: str, onnx: Path, shapes: Shapes, key: str, source: str,
           settings: BuildSettings, target: TrtTarget, say: Callable[[str], None]) -> PlanEntry:
    file = plan_file(name, shapes, precision, key)
    say(f"build TensorRT plan {file} ({precision}, {dict(shapes)})")
    build_plan(onnx, shapes, folder / file, settings, timing_cache_path(settings, target))
    return PlanEntry(file, sha256_files([folder / file]), key, target.trt_version, target.compute_capability,
                     dict(shapes), precision, source)


def build_plan(onnx: Path, shapes: Shapes, out: Path, settings: BuildSettings, timing_cache: Path) -> None:
    """Parse, configure one static profile, build, then write the timing cache and the plan atomically."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):  # by path: external data (> 2 GB) is found beside it
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx.name}: {errors}")
    _check_inputs(network, shapes, onnx)
    config = _config(builder, shapes, settings, timing_cache)
    monitor = _progress_monitor(out.name)
    if monitor is not None:
        config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT failed to build {out.name} from {onnx.name} (see the log lines above)")
    atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    atomic_write_bytes(out, bytes(memoryview(plan)))


def _check_inputs(network: "trt.INetworkDefinition", shapes: Shapes, onnx: Path) -> None:
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    if names != set(shapes):
        raise ExportError(f"{onnx.name} has inputs {sorted(names)}, the profile gives {sorted(shapes)}")


def _config(builder: "trt.Builder", shapes: Shapes, settings: BuildSettings,
            timing_cache: Path) -> "trt.IBuilderConfig":
    import tensorrt as trt

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    config.builder_optimization_level = settings.optimization_level
    profile = builder.create_optimization_profile()
    for name, shape in shapes.items():  # static: the runtime sends exactly these shapes (or pads up to them)
        dims = trt.Dims(list(shape))
        profile.set_shape(name, dims, dims, dims)
    config.add_optimization_profile(profile)
    cached = timing_cache.read_bytes() if timing_cache.is_file() else b""
    # A cache from another TensorRT/GPU is refused by TensorRT (ignore_mismatch=False): start an empty one.
    if not config.set_timing_cache(config.create_timing_cache(cached), False):
        config.set_timing_cache(config.create_timing_cache(b""), False)
    return config


def timing_cache_path(settings: BuildSettings, target: TrtTarget) -> Path:
    """One timing cache per (TensorRT version, GPU architecture), shared by every export on this machine."""
    root = settings.timing_cache_dir or Path(os.environ.get("CYCLEDIFF_CACHE", Path.home() / ".cache" / "cyclediff"))
    sm = target.compute_capability.replace(".", "")
    return root / "tensorrt" / f"timing-trt{target.trt_version}-sm{sm}.cache"


def _progress_monitor(label: str) -> "trt.IProgressMonitor | None":
    """A trt.IProgressMonitor drawing one tqdm bar per builder phase (None where TensorRT lacks the interface)."""
    import tensorrt as trt

    if not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm.auto import tqdm

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.lock = threading.Lock()  # TensorRT may report from several threads
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self.lock:
                self.bars[phase_name] = tqdm(total=num_steps, desc=f"{label}: {phase_name}", leave=False,
                                             position=len(self.bars))

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self.lock:
                bar = self.bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self.lock:
                bar = self.bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return Monitor()


def _remove_stale(folder: Path, plans: dict[str, tuple[PlanEntry, ...]]) -> None:
    """Plans no entry refers to any more (other shapes, older builds) are deleted, not left to mislead."""
    keep = {e.file for es in plans.values() for e in es}
    for path in (folder / "trt").glob("*.plan"):
        if f"trt/{path.name}" not in keep:
            path.unlink()
