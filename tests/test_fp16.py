"""fp16 ONNX conversion of the tiny export: runs on ONNX Runtime CPU, finite, within fp16 error of fp32."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest

from cyclediff.export import fp16
from cyclediff.export.manifest import Manifest
from cyclediff.export.models import sample_inputs
from cyclediff.export.onnx_export import ExportError
from cyclediff.export.specs import MODEL_NAMES, UNET, VAE_DECODER

FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def converted(exports, tmp_path_factory):
    """model name -> (fp32 path, fp16 path, manifest) for the tiny checkpoint's export."""
    folder = exports("tiny")
    manifest = Manifest.load(folder)
    out = tmp_path_factory.mktemp("fp16")
    return {n: (folder / manifest.models[n].file, fp16.convert_file(folder / manifest.models[n].file,
                                                                    out / f"{n}.onnx")[0], manifest)
            for n in MODEL_NAMES}


def _run(path, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.numpy() for k, v in feeds.items()})


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fp16_graph_is_close_to_fp32(converted, name):
    src, dst, manifest = converted[name]
    feeds = sample_inputs(manifest.models[name].spec, manifest.dims, batch=2, latent_hw=(4, 6), seed=3)
    for ref, got in zip(_run(src, feeds), _run(dst, feeds), strict=True):
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert np.isfinite(got).all()
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        print(f"{name}: max relative error {rel:.2e}")
        assert rel < 1e-2, rel


@pytest.mark.parametrize("name", [UNET, VAE_DECODER])
def test_io_stays_fp32_and_arithmetic_is_fp16(converted, name):
    src, dst, _ = converted[name]
    model, ref = onnx.load(str(dst)), onnx.load(str(src))
    types = lambda vs: [v.type.tensor_type.elem_type for v in vs]  # noqa: E731
    assert types(model.graph.input) == types(ref.graph.input)
    assert types(model.graph.output) == types(ref.graph.output) == [FLOAT] * len(ref.graph.output)
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    assert conv_weights and all(i.data_type == HALF for i in model.graph.initializer if i.name in conv_weights)


@pytest.mark.parametrize("name", [UNET, VAE_DECODER])
def test_normalisations_and_softmax_stay_fp32(converted, name):
    model = onnx.load(str(converted[name][1]))
    types = fp16.value_types(model)
    kept = [n for n in model.graph.node if n.op_type in fp16.KEEP_FP32_OPS]
    # A UNet exported with fused attention (export/ort_optimize.py) has its softmax inside MultiHeadAttention.
    fused = any(n.op_type == "MultiHeadAttention" for n in model.graph.node)
    assert {n.op_type for n in kept} >= {"InstanceNormalization"} | (set() if fused else {"Softmax"})
    for node in kept:
        float_io = [types.get(t) for t in (*node.input, *node.output) if t and types.get(t) in (FLOAT, HALF)]
        assert float_io and set(float_io) == {FLOAT}, (node.op_type, node.name)
    fp16.check_precision(model)


def test_conversion_is_deterministic(converted, tmp_path):
    """The plan cache keys on the fp16 bytes: the same input must give the same file."""
    src, dst, _ = converted[VAE_DECODER]
    again = fp16.convert_file(src, tmp_path / "again.onnx")[0]
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(dst.read_bytes()).digest()


def test_check_precision_refuses_fp16_io(converted):
    model = fp16.to_fp16(onnx.load(str(converted[VAE_DECODER][0])), fp16.Fp16Settings(keep_io_types=False))
    with pytest.raises(ExportError, match="became fp16"):
        fp16.check_precision(model)


def test_check_precision_refuses_an_unconverted_graph(converted):
    with pytest.raises(ExportError, match="no fp16 tensor"):
        fp16.check_precision(onnx.load(str(converted[VAE_DECODER][0])))
