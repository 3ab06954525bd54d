"""fp32 ONNX -> fp16 ONNX for strongly typed TensorRT: fp16 math, fp32 where fp16 overflows, fp32 graph I/O.

TensorRT >= 10 networks are strongly typed: the precision of every layer is the precision of the ONNX graph.
So the fp16 graph is made here, once, with maintained tools: onnx-graphsurgeon folds constants and cleans up,
and ONNX Runtime's float16 converter (the maintained successor of onnxconverter-common's, which mistypes the
Cast nodes of these exports) rewrites the arithmetic, keeping the ops of `KEEP_FP32_OPS` and the graph I/O in fp32.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import onnx

from cyclediff.export.onnx_export import ExportError

# Ops whose fp16 versions overflow or lose the sum: mean/variance reductions of the normalisations (GroupNorm
# exports as InstanceNormalization, LayerNorm as LayerNormalization, or as ReduceMean/Pow chains when
# decomposed), softmax's exp-sum, and Exp itself (the VAE encoder's std = exp(logvar / 2) underflows fp16).
KEEP_FP32_OPS = (
    "GroupNormalization", "LayerNormalization", "InstanceNormalization", "Softmax",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Pow", "Exp",
)
_FLOAT, _HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
_PROTOBUF_LIMIT = 1_800_000_000  # bytes of weights above which a model is only handled through files


@dataclasses.dataclass(frozen=True)
class Fp16Settings:
    """What changes the fp16 graph's bytes (so: part of the TensorRT plan key)."""

    keep_fp32_ops: tuple[str, ...] = KEEP_FP32_OPS
    keep_io_types: bool = True  # graph inputs/outputs stay fp32: the runtime's buffers are fp32
    fold_passes: int = 4  # shape inference + constant folding rounds (each can expose more constants)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def convert_file(src: Path, dst: Path, settings: Fp16Settings = Fp16Settings()) -> list[Path]:
    """fp32 `src` (.onnx, external data beside it) -> fp16 `dst`, written atomically; returns dst's files."""
    model = to_fp16(onnx.load(str(src)), settings)
    check_precision(model, settings)
    return save_atomic(model, dst)


def to_fp16(model: onnx.ModelProto, settings: Fp16Settings = Fp16Settings()) -> onnx.ModelProto:
    """Fold constants in fp32 (so folded values are computed exactly), convert, then drop dead nodes."""
    model = fold_constants(model, settings.fold_passes)
    model = infer_shapes(model)
    half = _converter()(model, keep_io_types=settings.keep_io_types, disable_shape_infer=True,
                        op_block_list=list(settings.keep_fp32_ops))
    return cleanup(half)


def _converter() -> Callable[..., onnx.ModelProto]:
    """ORT's float16 converter, imported without the side effect of its package (appending itself to sys.path)."""
    saved = list(sys.path)
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    finally:
        sys.path[:] = saved
    return convert_float_to_float16


def fold_constants(model: onnx.ModelProto, passes: int) -> onnx.ModelProto:
    """Repeat (shape inference with data propagation, fold, clean up) until the graph stops shrinking.

    Shape inference turns Shape->Gather->... chains on static axes into constants that the next fold removes;
    axes left symbolic ('B', 'h', 'w') keep their shape arithmetic, so the graph stays dynamic.
    """
    import onnx_graphsurgeon as gs

    for _ in range(passes):
        before = len(model.graph.node)
        graph = gs.import_onnx(infer_shapes(model))
        graph.fold_constants(error_ok=True).cleanup().toposort()
        model = gs.export_onnx(graph)
        if len(model.graph.node) == before:
            break
    return model


def cleanup(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx shape/type inference; through files for models past protobuf's 2 GiB message limit."""
    if _weight_bytes(model) < _PROTOBUF_LIMIT:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # saving with external data empties the saved proto's initializers
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(copy, str(src), save_as_external_data=True, location="in.onnx.data")
        onnx.shape_inference.infer_shapes_path(str(src), str(dst), data_prop=True)
        return onnx.load(str(dst))


def check_precision(model: onnx.ModelProto, settings: Fp16Settings = Fp16Settings()) -> None:
    """The converted graph keeps what it promises: fp32 I/O, fp32 kept ops, and some fp16 arithmetic."""
    types = value_types(model)
    if settings.keep_io_types:
        for v in (*model.graph.input, *model.graph.output):
            if v.type.tensor_type.elem_type == _HALF:
                raise ExportError(f"fp16 graph: I/O tensor {v.name!r} became fp16; expected it kept fp32")
    for node in model.graph.node:
        if node.op_type in settings.keep_fp32_ops:
            bad = [n for n in (*node.input, *node.output) if types.get(n) == _HALF]
            if bad:
                raise ExportError(f"fp16 graph: {node.op_type} node {node.name!r} has fp16 tensors {bad}")
    if _HALF not in types.values():
        raise ExportError("fp16 graph has no fp16 tensor: the conversion did nothing")


def value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> ONNX elem type for every typed value (I/O, initializers, inferred intermediates)."""
    inferred = infer_shapes(model).graph
    types = {i.name: i.data_type for i in inferred.initializer}
    for v in (*inferred.input, *inferred.output, *inferred.value_info):
        types[v.name] = v.type.tensor_type.elem_type
    return types


def save_atomic(model: onnx.ModelProto, dst: Path) -> list[Path]:
    """Write dst (+ dst.data when large) in a temp folder beside it, then rename: data first, graph last.

    A large model's initializers are moved out to the data file by onnx.save_model: do not reuse `model` after.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    large = _weight_bytes(model) >= _PROTOBUF_LIMIT
    data = dst.with_name(dst.name + ".data")
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=f".{dst.name}.") as tmp:
        staged = Path(tmp) / dst.name
        onnx.save_model(model, str(staged), save_as_external_data=large, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        files = [staged, staged.with_name(data.name)] if large else [staged]
        for f in files:
            with open(f, "rb+") as handle:
                os.fsync(handle.fileno())
        if large:
            os.replace(files[1], data)
        else:
            data.unlink(missing_ok=True)
        os.replace(staged, dst)
    return [dst, data] if large else [dst]


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)
