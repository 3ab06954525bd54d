"""The memory planner in isolation: byte parsing, the budget, chunk sizes, refusals, and a bound on a measured call."""
from __future__ import annotations

import types

import pytest
import torch

from cyclediff.export.manifest import Manifest
from cyclediff.export.specs import Dims
from cyclediff.runtime.core.memory_plan import (
    ArchProfile,
    GiB,
    MemoryBudgetError,
    MemoryPlanner,
    available_ram,
    budget_bytes,
    parse_bytes,
)

SD_DIMS = Dims(text_len=77, text_width=768, text_states=13, latent_channels=4, vae_scale=8, unet_downscale=8)
FUSED = {"ort_attention": {"unet": {"attention": "MultiHeadAttention"}}}


def manifest(extra: dict | None = None, dims: Dims = SD_DIMS) -> Manifest:
    return Manifest(checkpoint={}, scheduler={}, dims=dims, vae_scaling_factor=0.18215, sample_size=512, models={},
                    tokenizer_files={}, tools={}, opset=18, extra=extra or {})


def planner(budget: int | str = "16GiB", backend: str = "onnxruntime", extra: dict | None = None,
            max_batch: int = 16) -> MemoryPlanner:
    return MemoryPlanner(manifest(FUSED if extra is None else extra), backend, "fp32", parse_bytes(budget), max_batch)


@pytest.mark.parametrize("text, expected", [("12GB", 12 * 10**9), ("12GiB", 12 * GiB), ("512MiB", 512 << 20),
                                            ("1.5 gb", 1_500_000_000), (4096, 4096), ("100", 100)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["12 parsecs", "", "-1GB", 0, -5, True, 1.5, None, "GB"])
def test_parse_bytes_refuses(bad):
    with pytest.raises(ValueError):
        parse_bytes(bad)


def test_budget_defaults_to_a_fraction_of_available_ram():
    ram = available_ram()
    assert 0 < budget_bytes("cpu", None) < ram
    assert budget_bytes("cpu", "3GiB") == 3 * GiB


def test_arch_profile_reads_diffusers_configs():
    sd_unet = types.SimpleNamespace(down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                    block_out_channels=(320, 640, 1280, 1280), num_attention_heads=None,
                                    attention_head_dim=8)
    tiny_unet = types.SimpleNamespace(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                      block_out_channels=(32, 64), num_attention_heads=None, attention_head_dim=(2, 4))
    vae = types.SimpleNamespace(block_out_channels=(128, 256, 512, 512))
    assert ArchProfile.of(sd_unet, vae) == ArchProfile(320, 0, 8, 128)
    assert ArchProfile.of(tiny_unet, vae) == ArchProfile(32, 1, 4, 128)


def test_materialized_scores_grow_with_the_fourth_power_of_the_side():
    fused, unfused = planner(), planner(extra={})
    assert not fused.unet_scores_materialized and unfused.unet_scores_materialized
    assert planner(backend="torch", extra={}).unet_scores_materialized is False  # SDPA
    # fused: linear in pixels; unfused: (heads, T, T) scores dominate at 64² (SD: 2 x 512 MiB per sample)
    assert fused.unet_sample_bytes(64, 64) == pytest.approx(4 * fused.unet_sample_bytes(32, 32), rel=1e-6)
    assert unfused.unet_sample_bytes(64, 64) - fused.unet_sample_bytes(64, 64) == 2 * 8 * 4096 ** 2 * 4


def test_max_unet_batch_shrinks_with_size_and_is_capped():
    p = planner("8GiB", max_batch=16)
    sizes = [p.max_unet_batch(s, s) for s in (32, 64, 96, 128)]
    assert sizes[0] == 16 and sizes == sorted(sizes, reverse=True) and sizes[-1] < 16
    assert planner("16GiB", max_batch=3).max_unet_batch(32, 32) == 3
    assert planner("16GiB", extra={}).max_unet_batch(64, 64) < p.max_unet_batch(64, 64)
    # what the caller already holds comes off the budget
    assert p.max_unet_batch(96, 96, reserved=4 * GiB) < p.max_unet_batch(96, 96)


def test_max_unet_batch_refuses_when_one_sample_does_not_fit():
    with pytest.raises(MemoryBudgetError):
        planner("200MiB", extra={}).max_unet_batch(64, 64)


def test_check_call_plans_within_budget():
    p = planner("16GiB")
    plan = p.check_call(64, 64, batch=1, steps=8, guided=True)
    assert plan["peak"] <= p.budget and 1 <= plan["chunk"] <= 8
    assert plan["peak"] >= plan["buffers"] + max(plan["encoder_unet"], plan["decoder_unet"], plan["vae"])
    more = p.check_call(64, 64, batch=4, steps=40, guided=True, source_guided=True)
    assert more["buffers"] > plan["buffers"]


def test_check_call_refuses_before_allocating_and_says_what_to_change():
    p = planner("2GiB", extra={})  # unfused SD at 1024² needs 2 x 8 GiB of scores per sample
    with pytest.raises(MemoryBudgetError) as err:
        p.check_call(128, 128, batch=1, steps=8, guided=True)
    text = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "1024x1024" in text and "latents 128x128" in text and "max_memory=" in text and "smaller image" in text
    assert "GiB" in text


def test_issue_scenario_chunk_follows_the_budget():
    """The README snippet on the tiny export at 512² (latents 256², vae_scale 2) was OOM-killed with a fixed
    chunk of 16 and unfused attention; the plan keeps the chunk's peak within the budget instead."""
    tiny = Dims(text_len=77, text_width=32, text_states=3, latent_channels=4, vae_scale=2, unet_downscale=2)
    profile = {"memory_profile": ArchProfile(32, 1, 4, 16).to_json()}
    unfused = MemoryPlanner(manifest(profile, tiny), "onnxruntime", "fp32", parse_bytes("20GiB"), 16)
    assert unfused.unet_sample_bytes(256, 256) * 16 > 24 * GiB  # what the fixed chunk asked for
    with pytest.raises(MemoryBudgetError):  # even the decoder's batch of 2 needs 2 x 8.6 GB of scores
        unfused.check_call(256, 256, batch=1, steps=40, guided=True)
    fused = MemoryPlanner(manifest({**profile, **FUSED}, tiny), "onnxruntime", "fp32", parse_bytes("3GiB"), 16)
    assert 1 < fused.max_unet_batch(256, 256) < 16
    # An export whose VAE graphs are not fused: tiny's VAE mid-block attends over all 256² latent pixels
    # (2 x 17 GB scores), so the call is refused before it starts.
    assert fused.vae_image_bytes(256, 256) > 24 * GiB
    with pytest.raises(MemoryBudgetError, match="512x512"):
        fused.check_call(256, 256, batch=1, steps=40, guided=True)
    # Today's exports fuse the VAE attention too (export/sdpa_fusion.py): the same call fits in 3 GiB.
    vae_fused = {"ort_attention": {**FUSED["ort_attention"], "vae_decoder": {"attention": "MultiHeadAttention"}}}
    both = MemoryPlanner(manifest({**profile, **vae_fused}, tiny), "onnxruntime", "fp32", parse_bytes("3GiB"), 16)
    assert both.vae_image_bytes(256, 256) < GiB
    assert both.check_call(256, 256, batch=1, steps=40, guided=True)["peak"] <= 3 * GiB


def test_report_is_a_plain_dict():
    report = planner().report(64, 64, batch=1, steps=8)
    assert report["fits"] and report["backend"] == "onnxruntime" and report["profile"]["unet_width"] == 320
    assert {"budget", "peak", "chunk", "buffers", "unet_sample"} <= set(report)


def _rss_peak_delta(run) -> int:
    """VmHWM after `run` minus VmRSS before it, with the high-water mark reset (Linux /proc/self/clear_refs)."""
    def status(key):
        return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
    base = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    run()
    return status("VmHWM:") - base


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_plan_bounds_a_measured_unet_call(exports):
    """The planner's UNet bytes are an upper bound of a real call's peak RSS (tiny export, onnxruntime)."""
    from cyclediff.export.models import sample_inputs
    from cyclediff.export.specs import UNET, output_shapes
    from cyclediff.runtime.core import backends

    folder = exports("tiny")
    m = Manifest.load(folder)
    unet = backends.load_runners(folder, m, "onnxruntime", torch.device("cpu"))[UNET]
    p = MemoryPlanner(m, "onnxruntime", "fp32", parse_bytes("8GiB"))
    assert not p.unet_scores_materialized  # the export fused the attention
    # 160²: unfused, the level-1 scores alone would be 2 x (4, 6400, 6400) fp32 = 1.3 GB per sample
    feeds = sample_inputs(unet.spec, m.dims, 2, (160, 160))
    shapes = output_shapes(unet.spec, {k: tuple(v.shape) for k, v in feeds.items()}, m.dims)
    outs = {k: torch.empty(s) for k, s in shapes.items()}
    measured = _rss_peak_delta(lambda: unet(feeds, outs))  # the first call: ORT's arena grows to the peak
    assert measured <= 2 * p.unet_sample_bytes(160, 160) + p.coefficients.overhead


def test_onnxruntime_cpu_sessions_share_one_arena(exports):
    """Each CPU session's own arena kept its largest run for the session's life (UNet chunk + VAE, summed);
    sessions with use_env_allocators take activations from the one arena registered for the process."""
    from cyclediff.engine import onnxruntime_backend as ortb
    from cyclediff.runtime.core import backends

    folder = exports("tiny")
    runners = backends.load_runners(folder, Manifest.load(folder), "onnxruntime", torch.device("cpu"))
    assert ortb._arena_registered
    for r in runners.values():
        assert _config_entry(r.session.get_session_options(), "session.use_env_allocators") == "1"
    assert _config_entry(ortb.session_options(False, None, cpu=False), "session.use_env_allocators") is None


def _config_entry(options, key: str) -> str | None:
    try:
        return options.get_session_config_entry(key)
    except RuntimeError:  # ONNX Runtime raises for a key never set
        return None
