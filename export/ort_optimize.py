"""ONNX Runtime's transformer optimizer on the exported UNet: attention that never materializes its scores.

The exported UNet computes attention as MatMul -> Softmax -> MatMul, which holds (B·heads, T, T) fp32 scores:
at 512² (T = 64·64 tokens, 8 heads) that is 512 MiB per sample, twice (scores and softmax). ONNX Runtime's
own optimizer for Stable Diffusion UNets (`optimize_model(model_type="unet")`) fuses each attention into a
com.microsoft op. Its CPU kernels differ: MultiHeadAttention with separate Q, K, V runs blockwise (flash, no
(T, T) buffer); the Attention op it emits for self-attention, and MultiHeadAttention with packed QKV, do not
(the first materializes, the second is "not implemented for CPU"). So after the optimizer, each
Attention(x, W_qkv, b) is rewritten as MatMul(x, W_qkv) -> Split -> MultiHeadAttention(q, k, v): the same
weights and math, in the op the CPU runs without the scores. CUDA runs both forms.

Fusions whose ops only CUDA implements (GroupNorm, SkipGroupNorm, BiasSplitGelu, BiasAdd, NhwcConv) are off:
the graph must run on the CPU provider. The result is verified against torch like any exported graph.
"""
from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from cyclediff.export.heap import release_freed_memory

RECORD = "cyclediff.ort_optimize"  # metadata_props key of an optimized graph: JSON of `summary`
_MS = "com.microsoft"
# FusionOptions flags turned off: CUDA-only contrib ops, QKV/KV packing (CPU MHA rejects packed QKV), and
# quantized/bias-skip variants that SD graphs do not contain.
_OFF = ("enable_group_norm", "enable_skip_group_norm", "enable_bias_splitgelu", "enable_bias_add",
        "enable_nhwc_conv", "enable_packed_qkv", "enable_packed_kv", "enable_bias_skip_layer_norm",
        "enable_qordered_matmul")


class OptimizeError(RuntimeError):
    """The optimizer failed or fused no attention; the export keeps the graph it verified instead."""


def fusion_options():
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("unet")
    for flag in _OFF:
        setattr(options, flag, False)
    return options


def optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    """The UNet graph with every attention as CPU-runnable, non-materializing MultiHeadAttention."""
    import onnxruntime
    from onnxruntime.transformers.optimizer import optimize_model

    with _numpy2_head_count(), _quiet():
        # opt_level 0: only the Python fusions; ORT's provider-specific rewrites happen when a session loads.
        fused = optimize_model(model, model_type="unet", opt_level=0, optimization_options=fusion_options(),
                               use_gpu=False).model
    split = _attention_to_mha(fused)
    ops = collections.Counter(n.op_type for n in fused.graph.node if n.domain == _MS)
    if ops.get("MultiHeadAttention", 0) == 0 or ops.get("Attention", 0):
        raise OptimizeError(f"ONNX Runtime's optimizer fused no CPU-runnable attention (ops {dict(ops)})")
    summary = {"tool": "onnxruntime.transformers.optimizer", "onnxruntime": onnxruntime.__version__,
               "model_type": "unet", "attention": "MultiHeadAttention", "self_attention_split": split,
               "fused_ops": dict(sorted(ops.items()))}
    if not any(o.domain == _MS for o in fused.opset_import):  # the ONNX checker wants the domain declared
        fused.opset_import.append(helper.make_opsetid(_MS, 1))
    helper.set_model_props(fused, {**{p.key: p.value for p in fused.metadata_props}, RECORD: json.dumps(summary)})
    return fused


def summary(path: Path) -> dict[str, Any] | None:
    """What `optimize` recorded in the graph at `path` (None: not optimized). Reads no weights."""
    model = onnx.load(str(path), load_external_data=False)
    value = next((p.value for p in model.metadata_props if p.key == RECORD), None)
    return json.loads(value) if value else None


def _attention_to_mha(model: onnx.ModelProto) -> int:
    """Attention(x, W (C, 3D), b) -> MatMul(x, W) -> Split(3) -> MultiHeadAttention(q, k, v[, b]); returns count.

    The optimizer stacks W's columns as [q | k | v] (np.stack of the three (C, D) weights on axis 1), so the
    (B, T, 3D) product splits into three (B, T, D) tensors in MHA's separate-input layout. Zero biases (the
    optimizer adds them: diffusers' to_q/k/v have none) are dropped from every attention node."""
    inits = {i.name: i for i in model.graph.initializer}
    biases = {n.input[3] for n in model.graph.node if n.op_type == "MultiHeadAttention" and len(n.input) == 4} | \
        {n.input[2] for n in model.graph.node if n.op_type == "Attention" and len(n.input) > 2}
    zero = {b for b in biases if b in inits and not np.any(onnx.numpy_helper.to_array(inits[b]))}
    nodes, count = [], 0
    for node in model.graph.node:
        if node.domain == _MS and node.op_type == "MultiHeadAttention" and len(node.input) == 4 \
                and node.input[3] in zero:
            del node.input[3]
        if node.domain != _MS or node.op_type != "Attention":
            nodes.append(node)
            continue
        count += 1
        x, w, b = node.input[0], node.input[1], node.input[2] if len(node.input) > 2 else ""
        qkv, q, k, v, sizes = (f"{node.name}/{s}" for s in ("qkv", "q", "k", "v", "split"))
        d = inits[w].dims[1] // 3
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([d, d, d], np.int64), sizes))
        nodes.append(helper.make_node("MatMul", [x, w], [qkv], name=f"{node.name}/MatMul"))
        # Split sizes as an input: valid from opset 13 on (num_outputs would need 18).
        nodes.append(helper.make_node("Split", [qkv, sizes], [q, k, v], name=f"{node.name}/Split", axis=-1))
        inputs = [q, k, v] + ([b] if b and b not in zero else [])
        nodes.append(helper.make_node("MultiHeadAttention", inputs, list(node.output), name=node.name,
                                      domain=_MS, **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {name for n in nodes for name in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]  # the dropped zero biases
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return count


@contextlib.contextmanager
def _numpy2_head_count() -> Iterator[None]:
    """onnxruntime 1.32's UNet attention fusion reads the head count with int() of a shape-(1,) array, which
    NumPy >= 2.4 refuses ("only 0-dimensional arrays can be converted"); read it with .item() instead."""
    import fusion_attention_unet  # the optimizer puts its folder on sys.path and imports its modules top-level

    cls = fusion_attention_unet.FusionAttentionUnet
    original = cls.get_num_heads

    def get_num_heads(self, reshape_q, is_torch2: bool = False) -> int:
        if not is_torch2:
            return original(self, reshape_q, is_torch2)
        concat = self.model.get_parent(reshape_q, 1)  # Reshape's shape: Concat(0, 0, heads, head_size)
        if concat is None or concat.op_type != "Concat" or len(concat.input) != 4:
            return 0
        heads = self.model.get_constant_value(concat.input[2])
        return int(heads.item()) if isinstance(heads, np.ndarray) and heads.size == 1 and heads.item() > 0 else 0

    cls.get_num_heads = get_num_heads
    try:
        yield
    finally:
        cls.get_num_heads = original


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The optimizer logs each fusion at INFO/WARNING and draws a tqdm bar; the export prints its own summary."""
    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


# Weights at least this large stay on disk while the optimizer runs (see optimize_file). The fusions read the
# values of attention projections (SD's largest: 1280 x 1280 fp32, 6.6 MB), biases and norms, all smaller.
LEAN_MIN_BYTES = 16 * 2**20


def optimize_file(path: Path, external_data_bytes: int) -> list[Path]:
    """Optimize the graph at `path` (+ its .data) in place; returns its files, .onnx first.

    The optimizer's symbolic shape inference copies the whole model each time it runs (several times per
    fusion pass): with every SD UNet weight in memory that peaked at 13 GB for a 3.4 GB graph. So the large
    convolution and feed-forward weights stay on disk during the fusion (the optimizer reads only their shapes)
    and are read in afterwards; if a fusion needed one of them, it is run again with every weight loaded."""
    from cyclediff.export.onnx_export import _save

    release_freed_memory()  # the trace just freed its copies
    try:
        fused = optimize(_lean(path))
    except OptimizeError:
        raise
    except Exception:  # noqa: BLE001 -- a fusion read a weight left on disk: the full-memory way, as before
        release_freed_memory()
        fused = optimize(onnx.load(str(path)))
    onnx.external_data_helper.load_external_data_for_model(fused, str(path.parent))
    return _save(fused, path, external_data_bytes)


def _lean(path: Path) -> onnx.ModelProto:
    """The graph at `path` with the external weights under LEAN_MIN_BYTES read in and the larger ones left on
    disk (their TensorProtos keep dims, type and file location)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if onnx.external_data_helper.uses_external_data(tensor) and _external_length(tensor) < LEAN_MIN_BYTES:
            onnx.external_data_helper.load_external_data_for_tensor(tensor, str(path.parent))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
    return model


def _external_length(tensor: onnx.TensorProto) -> int:
    info = {e.key: e.value for e in tensor.external_data}
    if "length" in info:
        return int(info["length"])
    return int(np.prod(tensor.dims)) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
