"""Fuse the VAE's exported scaled-dot-product attention into ONNX Runtime's MultiHeadAttention (no (T, T) scores).

torch exports the VAE mid-block's `F.scaled_dot_product_attention` as
    q3, k3, v3 (B, T, H·d)  -> Reshape (B, T, H, d) -> Transpose -> [Mul √scale] -> MatMul(q, kᵀ) (B, H, T, T)
    -> Softmax -> MatMul(·, v) (B, H, T, d) -> Transpose (B, T, H, d) -> Reshape (B, T, H·d)
which holds two (B, H, T, T) fp32 buffers. At T = h·w latent tokens that is the whole VAE's memory once the
latent side passes ~128 (16 GiB per image at 256²), and ONNX Runtime's transformer optimizer does not fuse
the VAE (it matches the UNet's pattern only). This pass rewrites each such chain as
MultiHeadAttention(q3, k3, v3, num_heads=H) from the com.microsoft domain, whose CPU kernel works on key
blocks. The scale is the default 1/√d in both forms; the result is verified against torch like any graph.
"""
from __future__ import annotations

import collections
import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

RECORD = "cyclediff.sdpa_fusion"  # metadata_props key: JSON {"fused": count}
_MS = "com.microsoft"
_BNSH = [0, 2, 1, 3]  # (B, T, H, d) <-> (B, H, T, d)
_KT = [0, 2, 3, 1]  # (B, T, H, d) -> (B, H, d, T): kᵀ


class _Graph:
    """Producer and consumer lookups over a graph's nodes and constants (for matching, not for editing)."""

    def __init__(self, model: onnx.ModelProto):
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
        for n in model.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.inits = {i.name: i for i in model.graph.initializer}

    def op(self, name: str, op_type: str) -> onnx.NodeProto | None:
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op_type else None

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.op(name, "Constant")
        return numpy_helper.to_array(n.attribute[0].t) if n is not None and n.attribute[0].name == "value" else None


def _perm(node: onnx.NodeProto | None) -> list[int] | None:
    if node is None or node.op_type != "Transpose":
        return None
    return next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), None)


def _unscaled(g: _Graph, name: str) -> str:
    """Skip the Mul by √scale torch inserts on each of q and kᵀ (the default scale: MHA's own default)."""
    mul = g.op(name, "Mul")
    return mul.input[0] if mul is not None else name


def _head_input(g: _Graph, name: str, perm: list[int]) -> tuple[str, int] | None:
    """(B, H, ·, ·) tensor `name` = Transpose(perm) of Reshape(x3 (B, T, H·d), [B, -1, H, d]) -> (x3, H)."""
    t = g.producer.get(name)
    if _perm(t) != perm:
        return None
    r = g.op(t.input[0], "Reshape")
    concat = g.op(r.input[1], "Concat") if r is not None else None
    heads = g.constant(concat.input[2]) if concat is not None and len(concat.input) == 4 else None
    if heads is None or heads.size != 1:
        return None
    return r.input[0], int(heads.item())


def _match(g: _Graph, softmax: onnx.NodeProto) -> tuple[list[str], int, onnx.NodeProto] | None:
    """The SDPA chain around `softmax`: ([q3, k3, v3], heads, final Reshape node) or None."""
    qk = g.op(softmax.input[0], "MatMul")
    av = g.only_consumer(softmax.output[0], "MatMul")
    if qk is None or av is None or av.input[0] != softmax.output[0]:
        return None
    back = g.only_consumer(av.output[0], "Transpose")
    out = g.only_consumer(back.output[0], "Reshape") if _perm(back) == _BNSH else None
    q = _head_input(g, _unscaled(g, qk.input[0]), _BNSH)
    k = _head_input(g, _unscaled(g, qk.input[1]), _KT)
    v = _head_input(g, av.input[1], _BNSH)
    if out is None or q is None or k is None or v is None or not q[1] == k[1] == v[1]:
        return None
    return [q[0], k[0], v[0]], q[1], out


def fuse(model: onnx.ModelProto) -> int:
    """Rewrite every matched SDPA chain in place; returns how many. Unused nodes are pruned."""
    g = _Graph(model)
    replaced: dict[int, onnx.NodeProto] = {}
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax"]:
        found = _match(g, softmax)
        if found is None:
            continue
        inputs, heads, out = found
        replaced[id(out)] = helper.make_node("MultiHeadAttention", inputs, list(out.output), domain=_MS,
                                             name=f"{softmax.name}/MultiHeadAttention", num_heads=heads)
    if not replaced:
        return 0
    nodes = [replaced.get(id(n), n) for n in model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(_live(model, nodes))
    if not any(o.domain == _MS for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MS, 1))
    props = {p.key: p.value for p in model.metadata_props}
    helper.set_model_props(model, {**props, RECORD: json.dumps({"fused": len(replaced)})})
    return len(replaced)


def _live(model: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """`nodes` without those whose outputs nothing reads (the old q·kᵀ, softmax and scale chains)."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for n in reversed(nodes):  # the graph is topologically sorted: readers come after writers
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(i for i in n.input if i)
    return keep[::-1]


def fuse_file(path, external_data_bytes: int) -> list | None:
    """Fuse the graph at `path` (+ its .data) in place when it has SDPA chains; returns its files, .onnx first,
    or None (file untouched) when it has none, as a VAE without a mid-block attention."""
    from cyclediff.export.onnx_export import _save

    model = onnx.load(str(path))
    if fuse(model) == 0:
        return None
    return _save(model, path, external_data_bytes)


def fused_count(path) -> int:
    """How many attentions `fuse` rewrote in the graph at `path` (0: none, or not fused). Reads no weights."""
    model = onnx.load(str(path), load_external_data=False)
    value = next((p.value for p in model.metadata_props if p.key == RECORD), None)
    return int(json.loads(value)["fused"]) if value else 0
