"""Trace one torch graph to an ONNX file with the declared I/O names and shapes (legacy tracer or dynamo)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch

from cyclediff.export.models import sample_inputs
from cyclediff.export.specs import Dims, ModelSpec

EXPORTERS = ("legacy", "dynamo")
MIN_OPSET, MAX_OPSET = 17, 20  # 17: first with LayerNormalization; 20: the newest both exporters emit
_ELEM_TYPES = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}


class ExportError(RuntimeError):
    """An ONNX export or its verification failed; the message names the model and the reason."""


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """Everything besides the checkpoint that changes the exported bytes (part of the reuse key)."""

    opset: int = 18
    exporters: tuple[str, ...] = EXPORTERS  # tried in order; the first that exports and verifies wins
    trace_batch: int = 2
    trace_size: int | None = None  # latent side for tracing; None: 2x the UNet's downsampling factor
    # Protobuf caps a single file at 2 GiB; above this the weights go to one <name>.onnx.data file.
    external_data_bytes: int = 1_800_000_000
    # UNet attention fused by ONNX Runtime's optimizer into MultiHeadAttention (export/ort_optimize.py): no
    # (T, T) scores, but com.microsoft ops that only ONNX Runtime runs; off for graphs TensorRT will parse.
    ort_attention: bool = True
    # Graphs for the torch backend alone (the manifest's identity): no ONNX Runtime parity run, no attention
    # fusion, no ORT-optimized copies or OpenVINO IR; other backends refuse such an export (benchmarks/gpu_check.sh:
    # the SD architecture's ORT steps cost minutes of a GPU machine's time that the torch backend never uses).
    torch_only: bool = False

    def __post_init__(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ValueError(f"--opset {self.opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (18 recommended)")
        if not self.exporters or any(e not in EXPORTERS for e in self.exporters):
            raise ValueError(f"exporters must be a non-empty subset of {EXPORTERS}, got {self.exporters!r}")
        if self.trace_batch < 1 or (self.trace_size is not None and self.trace_size < 1):
            raise ValueError(f"trace batch/size must be >= 1, got {self.trace_batch}/{self.trace_size}")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if not self.torch_only:  # left out when off, so the reuse keys of earlier exports stay as they were
            del d["torch_only"]
        return d


def export_onnx(
    exporter: str, module: torch.nn.Module, spec: ModelSpec, dims: Dims, folder: Path, settings: ExportSettings,
    trace_hw: tuple[int, int],
) -> list[Path]:
    """Write folder/<name>.onnx (+ <name>.onnx.data when large); return the files, .onnx first."""
    raw = folder / "raw" / f"{spec.name}.onnx"
    raw.parent.mkdir(parents=True, exist_ok=True)
    feeds = sample_inputs(spec, dims, settings.trace_batch, trace_hw)
    args = tuple(feeds[t.name] for t in spec.inputs)
    # dynamo: no console report, onnxscript's graph optimizer on; legacy: fold constants (weights stay weights).
    extra: dict[str, Any] = {"verbose": False, "optimize": True} if exporter == "dynamo" else {
        "do_constant_folding": True}
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            module, args, str(raw),
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_axes=spec.dynamic_axes(),
            opset_version=settings.opset,
            dynamo=exporter == "dynamo",
            **extra,
        )
    model = onnx.load(str(raw))  # pulls in any external data the exporter wrote next to it
    shutil.rmtree(raw.parent)  # a UNet is 3.4 GB: do not keep two copies on disk
    _check_opset(model, settings.opset, exporter)
    stamp_io(model, spec)
    return _save(model, folder / f"{spec.name}.onnx", settings.external_data_bytes)


def stamp_io(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Check I/O names and dtypes, and write the declared shapes onto them.

    Exporters name derived axes themselves ('Concathidden_states_dim_2', '2*((h - 1)//2) + 2'); the declared
    symbols ('B', 'h', 77, ...) are what engines and runtimes read, so they replace the exporter's guesses.
    """
    for kind, values, declared in (("inputs", model.graph.input, spec.inputs), ("outputs", model.graph.output,
                                                                                  spec.outputs)):
        names = [v.name for v in values]
        if names != [t.name for t in declared]:
            raise ExportError(f"{spec.name}: exported {kind} {names} != declared {[t.name for t in declared]}")
        for value, t in zip(values, declared):
            tensor_type = value.type.tensor_type
            if tensor_type.elem_type != _ELEM_TYPES[t.dtype]:
                raise ExportError(f"{spec.name}: {t.name} exported as ONNX type {tensor_type.elem_type}, not {t.dtype}")
            tensor_type.shape.Clear()
            for d in t.shape:
                dim = tensor_type.shape.dim.add()
                if isinstance(d, str):
                    dim.dim_param = d
                else:
                    dim.dim_value = d


def _check_opset(model: onnx.ModelProto, opset: int, exporter: str) -> None:
    got = {o.domain or "ai.onnx": o.version for o in model.opset_import}.get("ai.onnx")
    if got != opset:
        raise ExportError(f"the {exporter} exporter produced opset {got}, not the requested {opset}")


def _save(model: onnx.ModelProto, path: Path, external_data_bytes: int) -> list[Path]:
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    data = path.with_name(path.name + ".data")
    for stale in (path, data):
        stale.unlink(missing_ok=True)
    if weights > external_data_bytes:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        files = [path, data]
    else:
        onnx.save_model(model, str(path))
        files = [path]
    for f in files:  # durable before the caller renames them into place
        with open(f, "rb+") as handle:
            os.fsync(handle.fileno())
    return files


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """TracerWarnings, deprecation notes and dynamo's 'torchvision is not installed' lines are noise here."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
