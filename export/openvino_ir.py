"""OpenVINO IR of every exported graph, written at export, so that an OpenVINO load reads no ONNX protobuf.

OpenVINO's ONNX frontend parses a graph whose weights sit inside the protobuf (the text encoder, the VAE) into
memory: 2.4 s and 1.9 s for SD v1.4's. The IR (DIR/openvino/<model>.xml + .bin) is memory-mapped: 0.4 s for
all four models.
The graph is the export's own (fused attention included: the frontend maps com.microsoft.MultiHeadAttention to
ScaledDotProductAttention), saved with its weights in fp32, so fp32 stays exact; a bf16 load converts them.

manifest.extra[SECTION] records each IR keyed by what shapes it: the source graph's sha256, OpenVINO's version and
this converter's schema. A load whose key does not match (another OpenVINO, a re-exported graph) reads the ONNX
graph instead, as before; nothing is keyed by "the file exists".

Why no compiled-model cache: the CPU plugin's `export_model` blob of the SD UNet holds the fp32 model (3.3 GB)
and `import_model` took 18 s against a 2.5-4 s compile from the IR (bf16, 2-core EPYC).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from cyclediff.export import derived_graphs
from cyclediff.export.manifest import Manifest, sha256_files

SECTION = "openvino_ir"  # manifest.extra[SECTION] = {"schema": 1, "graphs": [entry, ...]}
SECTION_SCHEMA = 1
FOLDER = "openvino"


def available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import openvino

    return openvino.__version__


def key(source_sha256: str) -> str:
    payload = {"source": source_sha256, "openvino": version(), "schema": SECTION_SCHEMA}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def lookup(manifest: Manifest, source_sha256: str) -> dict[str, Any] | None:
    """The recorded IR of the graph with this sha256 for this OpenVINO; None if there is none."""
    want = key(source_sha256)
    return next((e for e in _entries(manifest) if e.get("key") == want), None)


def attach(folder: Path, manifest: Manifest) -> Manifest:
    """Write the IR of every model graph (reusing intact ones with the same key) and return the manifest with
    the section recording them; files no entry names are removed from DIR/openvino/. Without openvino
    installed the manifest is returned without the section (an OpenVINO load then reads the ONNX graphs)."""
    if not available():
        return manifest
    previous = {e["key"]: e for e in _entries(manifest)}
    entries = []
    for name, model in manifest.models.items():
        k = key(model.sha256)
        old = previous.get(k)
        fresh = old is not None and derived_graphs.intact(folder, old)
        entries.append(old if fresh else _build(folder, name, model.file, k, model.sha256))
    derived_graphs.prune(folder, FOLDER, {f for e in entries for f in (e["file"], *e["data_files"])})
    section = {"schema": SECTION_SCHEMA, "graphs": entries}
    return dataclasses.replace(manifest, extra={**manifest.extra, SECTION: section})


def convert(source: Path, dest_xml: Path) -> list[Path]:
    """source ONNX -> dest_xml + dest .bin, weights kept fp32."""
    import openvino as ov

    model = ov.Core().read_model(str(source))
    ov.save_model(model, str(dest_xml), compress_to_fp16=False)
    return [dest_xml, dest_xml.with_suffix(".bin")]


def _build(folder: Path, name: str, source: str, k: str, source_sha256: str) -> dict[str, Any]:
    """Convert into DIR/.staging/openvino, then rename into DIR/openvino (weights first, graph last)."""
    staging = folder / ".staging" / FOLDER
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    files = convert(folder / source, staging / f"{name}.xml")
    (folder / FOLDER).mkdir(exist_ok=True)
    for f in reversed(files):
        os.replace(f, folder / FOLDER / f.name)
    shutil.rmtree(staging, ignore_errors=True)
    rel = [f"{FOLDER}/{f.name}" for f in files]
    return {"model": name, "source_sha256": source_sha256, "key": k, "openvino": version(), "file": rel[0],
            "data_files": rel[1:], "sha256": sha256_files([folder / f for f in rel])}


def _entries(manifest: Manifest) -> list[dict[str, Any]]:
    """The recorded entries; none for another cyclediff's format (loads then read the ONNX graphs)."""
    return derived_graphs.entries(manifest, SECTION, SECTION_SCHEMA)
