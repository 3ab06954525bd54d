"""Pix2Pix-Zero's guided step is planned before the edit starts: the autograd bytes counted on the meta device
equal those of a real CPU run, and an edit whose guided step would pass the memory budget is refused up front."""
from __future__ import annotations

import pytest
import torch

import cyclediff
from cyclediff.runtime.core.memory_plan import MemoryBudgetError
from cyclediff.runtime.methods.pix2pix_zero import attention_probe, backward_plan
from cyclediff.runtime.methods.pix2pix_zero.attention_probe import Probe


@pytest.fixture(scope="module")
def engine(exports):
    return cyclediff.Engine.load(exports("tiny"), backend="torch", progress=False, threads=1)


@pytest.mark.parametrize("hw", [16, 24])
def test_meta_count_equals_a_real_run(engine, hw):
    unet = engine.core.runners["unet"].module.unet
    text = engine.pix2pix.text_shape
    torch_sdpa = torch.nn.functional.scaled_dot_product_attention
    with backward_plan._fused_attention_on_meta():
        saved, largest, maps = backward_plan._on_meta(unet, 2, (4, hw, hw), text, torch.float32)
    local = attention_probe.install(unet)
    x, t, emb = torch.randn(2, 4, hw, hw), torch.full((2,), 500.0), torch.randn(2, *text)
    record = Probe()
    with torch.no_grad(), attention_probe.opened(local, record):
        unet(x, t, emb)
    assert (saved, largest) == backward_plan.count_saved(unet, local, x, t, emb, record.maps)
    assert maps == sum(m.numel() * m.element_size() for m in record.maps)
    assert saved > 0 and torch.nn.functional.scaled_dot_product_attention is torch_sdpa  # restored


def test_guided_edit_over_budget_is_refused_before_work(engine, exports):
    planner = engine.core.planner
    h = w = engine.manifest.sample_size // engine.manifest.dims.vae_scale
    unet = engine.core.runners["unet"].module.unet
    extra = backward_plan.guided_step_bytes(unet, 2, (4, h, w), engine.pix2pix.text_shape, torch.float32)
    plain = planner.plan(_shape(h, w, 0))["peak"]
    guided = planner.plan(_shape(h, w, extra))["peak"]
    assert guided > plain
    tight = cyclediff.Engine.load(exports("tiny"), backend="torch", progress=False, threads=1,
                                  max_memory=(plain + guided) // 2)
    calls = []
    tight.core.runners["unet"].module.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(MemoryBudgetError, match="max_memory"):
        tight.pix2pix_zero("a house", *_embeds(tight), num_inference_steps=2,
                           cross_attention_guidance_amount=0.1, generator=torch.Generator().manual_seed(0))
    assert not calls  # refused before any UNet call
    out = tight.pix2pix_zero("a house", *_embeds(tight), num_inference_steps=2, cross_attention_guidance_amount=0.0,
                             generator=torch.Generator().manual_seed(0), output_type="pt")
    assert torch.isfinite(out.images).all()  # the same edit without the guided step fits


def _shape(h, w, extra):
    from cyclediff.runtime.core.memory_plan import CallShape

    return CallShape(h, w, 1, 2, True, False, extra)


def _embeds(engine):
    d = engine.edit_direction(["a house"], ["a barn"])
    return d.source_embeds, d.target_embeds
