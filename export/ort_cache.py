"""ONNX Runtime-optimized graphs: optimized once at export, opened by later loads with graph optimization off.

ORT_ENABLE_ALL rewrites a graph for the execution provider (fusions, constant folding, and on the CPU the NCHWc
conv layout, whose block size follows the CPU's vector width), which takes most of a cold load. The export
saves the result under DIR/ort/ and records it in manifest.extra["ort_optimized"], keyed by everything that
shapes it: the source graph's sha256, ONNX Runtime's version, the providers, the level and the CPU's ISA. A load
whose key matches opens the saved graph with ORT_DISABLE_ALL; any other load optimizes in memory, as before.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from cyclediff.export import derived_graphs
from cyclediff.export.manifest import Manifest, sha256_files

SECTION = "ort_optimized"  # manifest.extra[SECTION] = {"schema": 1, "graphs": [entry, ...]}
SECTION_SCHEMA = 1
FOLDER = "ort"
LEVEL = "all"
CPU = ("CPUExecutionProvider",)
# Initializers of at least this many bytes go to DIR/ort/<model>.weights: graphs over 2 GB (the SD UNet) need
# external data, and ORT aligns large initializers there so that the CPU provider can map them instead of copying.
EXTERNAL_MIN_BYTES = 1024
# CPU features that change what ORT_ENABLE_ALL produces or can run (vector width, fp16/bf16/int8 units).
_ISA = frozenset(("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
                  "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve",
                  "sve2", "i8mm", "bf16", "asimdhp", "fphp"))


@dataclasses.dataclass(frozen=True)
class OrtTarget:
    """Where an optimized graph is valid: ONNX Runtime version, providers, optimization level, CPU features."""

    ort_version: str
    providers: tuple[str, ...]
    level: str
    hardware: str

    @classmethod
    def here(cls, providers: tuple[str, ...] = CPU) -> OrtTarget:
        import onnxruntime as ort

        return cls(ort.__version__, tuple(providers), LEVEL, hardware())

    def key(self, source_sha256: str) -> str:
        payload = {"source": source_sha256, **dataclasses.asdict(self), "providers": list(self.providers)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def hardware() -> str:
    """'x86_64:avx,avx2,fma,...' from /proc/cpuinfo's flags ('' features where it cannot be read)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return f"{platform.machine()}:{','.join(sorted(flags & _ISA))}"


def lookup(manifest: Manifest, source_sha256: str, target: OrtTarget) -> dict[str, Any] | None:
    """The recorded optimized graph of the source graph with this sha256, for this target; None if there is none."""
    key = target.key(source_sha256)
    return next((e for e in _entries(manifest) if e.get("key") == key), None)


def attach(folder: Path, manifest: Manifest, target: OrtTarget | None = None) -> Manifest:
    """Optimize every model graph the manifest points at (unless an identical one is already there) and return
    the manifest with the section recording them. Files no entry names are removed from DIR/ort/."""
    target = target or OrtTarget.here()
    previous = {e["key"]: e for e in _entries(manifest)}
    entries = []
    for name, model in manifest.models.items():
        key = target.key(model.sha256)
        old = previous.get(key)
        fresh = old is not None and derived_graphs.intact(folder, old)
        entries.append(old if fresh else _build(folder, name, model.file, key, model.sha256, target))
    derived_graphs.prune(folder, FOLDER, {f for e in entries for f in (e["file"], *e["data_files"])})
    section = {"schema": SECTION_SCHEMA, "graphs": entries}
    return dataclasses.replace(manifest, extra={**manifest.extra, SECTION: section})


def optimize(source: Path, dest: Path, providers: tuple[str, ...] = CPU) -> list[Path]:
    """Let ONNX Runtime optimize `source` at ORT_ENABLE_ALL and save it as dest (+ initializers in dest.weights)."""
    import onnxruntime as ort

    data = dest.with_suffix(".weights")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(dest)
    options.log_severity_level = 3  # the "hardware specific (NCHWc)" warning is why the key holds the CPU's ISA
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data.name)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                     str(EXTERNAL_MIN_BYTES))
    ort.InferenceSession(str(source), options, providers=list(providers))
    return [dest, data] if data.is_file() else [dest]


def _build(folder: Path, name: str, source: str, key: str, source_sha256: str, target: OrtTarget) -> dict[str, Any]:
    """Optimize into DIR/.staging/ort, then rename into DIR/ort (data file first, as the export does)."""
    staging = folder / ".staging" / FOLDER
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    files = optimize(folder / source, staging / f"{name}.onnx", target.providers)  # the key is in the manifest
    (folder / FOLDER).mkdir(exist_ok=True)
    for f in reversed(files):
        os.replace(f, folder / FOLDER / f.name)
    shutil.rmtree(staging, ignore_errors=True)
    rel = [f"{FOLDER}/{f.name}" for f in files]
    return {"model": name, "source_sha256": source_sha256, "key": key, "file": rel[0], "data_files": rel[1:],
            "sha256": sha256_files([folder / f for f in rel]), **dataclasses.asdict(target),
            "providers": list(target.providers)}


def _entries(manifest: Manifest) -> list[dict[str, Any]]:
    """The recorded entries; none for another cyclediff's format (loads then optimize in memory)."""
    return derived_graphs.entries(manifest, SECTION, SECTION_SCHEMA)
