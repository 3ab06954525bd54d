"""The Engine plans memory before work: calls over the budget are refused before anything is allocated."""
from __future__ import annotations

import pytest
import torch
from reference import sample_image

from cyclediff import Engine
from cyclediff.runtime.core.memory_plan import MemoryBudgetError


def test_a_call_over_the_budget_is_refused_before_allocating(exports):
    engine = Engine.load(exports("tiny"), backend="onnxruntime", progress=False, max_memory="2MB")
    with pytest.raises(MemoryBudgetError, match="max_memory"):
        engine.edit("a cat", "a dog", sample_image(engine.manifest.sample_size), num_inference_steps=5)
    assert engine.workspaces.allocations == 0 and engine.dispatcher.stats["unet_calls"] == 0


def test_the_encoder_chunk_follows_the_budget(exports):
    """A budget that fits a few UNet samples but not max_batch: the plan's chunk is smaller, results equal."""
    roomy = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    per = roomy.planner.chunk_sample_bytes(16, 16)
    plan = roomy.memory_plan(num_inference_steps=10)
    tight_budget = plan["peak"] - plan["encoder_unet"] + 3 * per
    tight = Engine.load(exports("tiny"), backend="onnxruntime", progress=False, max_memory=tight_budget)
    assert 1 <= tight.memory_plan(num_inference_steps=10)["chunk"] < plan["chunk"]
    image = sample_image(roomy.manifest.sample_size)
    a, b = (e.encode(image, "a dog", num_inference_steps=10, source_guidance_scale=2.0,
                     generator=torch.Generator().manual_seed(0)) for e in (roomy, tight))
    torch.testing.assert_close(a.noises, b.noises, rtol=0, atol=1e-5)


def test_memory_report_shows_the_plan(exports):
    engine = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    plan = engine.memory_report()["plan"]
    assert plan["fits"] and plan["peak"] <= plan["budget"] and plan["chunk"] >= 1


def test_vae_attention_is_fused_so_large_images_fit(exports):
    """The VAE's mid-block attention is exported as MultiHeadAttention (export/sdpa_fusion.py), so the README
    snippet's 512² sample on the tiny export (latents 256²: 2 x 16 GiB of unfused scores) is planned and runs."""
    import onnx

    from cyclediff.export.specs import VAE_DECODER, VAE_ENCODER

    engine = Engine.load(exports("tiny"), backend="onnxruntime", progress=False, max_memory="6GiB")
    for name in (VAE_ENCODER, VAE_DECODER):
        graph = onnx.load(str(engine.folder / engine.manifest.models[name].file), load_external_data=False)
        ops = {n.op_type for n in graph.graph.node}
        assert "MultiHeadAttention" in ops and "Softmax" not in ops, name
        assert engine.manifest.extra["ort_attention"][name]["fused"] == 1
    assert not engine.planner.vae_scores_materialized
    # 512² pixels = latents 256² on tiny (vae_scale 2): well under a GiB per image, and the whole edit fits 6 GiB
    # (the end-to-end run takes minutes on two cores; the fused graphs' numerics are checked by every parity test).
    assert engine.planner.vae_image_bytes(256, 256) < 2**30
    assert engine.memory_plan(512, 512, num_inference_steps=50)["fits"]


def test_sdpa_fusion_leaves_a_graph_without_attention_untouched(tmp_path):
    """A VAE without a mid-block attention has nothing to fuse: the export keeps its file as it is, silently."""
    import onnx
    from onnx import TensorProto, helper

    from cyclediff.export import sdpa_fusion

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "plain", [x], [y])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), str(path))
    before = path.read_bytes()
    assert sdpa_fusion.fuse_file(path, 2**31) is None
    assert path.read_bytes() == before and sdpa_fusion.fused_count(path) == 0
