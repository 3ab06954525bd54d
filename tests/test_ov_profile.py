"""benchmarks/ov_profile.py's counts, and mfu.py's FLOP count of CPU attention that the MFU columns rely on."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import mfu  # noqa: E402

pytest.importorskip("openvino")


def test_the_flop_counter_counts_attention_on_the_cpu():
    q = torch.randn(2, 3, 48, 16)
    k = torch.randn(2, 3, 20, 16)
    counter = mfu.flop_counter()
    with counter, torch.inference_mode():
        torch.nn.functional.scaled_dot_product_attention(q, k, k)
    assert counter.get_total_flops() == 4 * 2 * 3 * 48 * 20 * 16  # Q·Kᵀ and P·V, 2 FLOPs per multiply-add


def test_the_profile_counts_the_flops_torch_counts_and_times_every_class(exports):
    import ov_profile

    from cyclediff.export.tiny import materialize

    path, scale = ov_profile.unet_source(exports("tiny"))
    p = ov_profile.profile(path, size=8 * scale, side=8, batch=2, dtype="fp32", threads=1, repeat=1)
    torch_tflop = mfu.unet_step_tflops(str(materialize("tiny")), (64,), batch=2)[64]  # it takes SD's /8: latent 8²
    assert sum(p.gflop.values()) == pytest.approx(1e3 * torch_tflop, rel=1e-9)
    assert p.gflop["attention"] > 0 and len(p.attention) > 0
    assert set(p.ms) <= set(ov_profile.CLASSES) and all(p.ms.get(c, 0) > 0 for c in ("convolution", "linear"))
    assert p.weight_bytes > 0 and p.call_s > 0


def test_the_bounds_replace_only_the_named_classes():
    import ov_profile

    p = ov_profile.Profile(size=256, side=32, batch=1, call_s=0.010, layers={},
                           ms={"convolution": 4.0, "linear": 2.0, "attention": 3.0, "other": 1.0},
                           gflop={"convolution": 8.0, "linear": 4.0, "attention": 2.0}, attention=(),
                           weight_bytes=2 * 10 ** 9)
    b = ov_profile.bounds(p, peak=6.0, torch_attn_ms=1.0, gbs=20.0)
    assert b["now"] == pytest.approx(100 * 14 / 10 / 6)  # 14 GFLOP in 10 ms = 1.4 TFLOP/s of 6
    assert b["gemms"] == pytest.approx(100 * 14 / (2 + 3 + 1) / 6)  # 12 GFLOP at 6 TFLOP/s = 2 ms
    assert b["gemms+attn"] == pytest.approx(100 * 14 / (2 + 1 + 1) / 6)
    assert b["attention_only"] == pytest.approx(100 * 14 / (100 + 1) / 6)  # the 100 ms weight floor binds
    assert b["weight_floor_ms"] == pytest.approx(100)


def test_the_cli_prints_a_table_per_size(exports):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ov_profile.py"), "--engine",
                           str(exports("tiny")), "--sizes", "16,32", "--dtype", "fp32", "--peak", "1.0",
                           "--repeat", "1"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("| attention |") == 2 and "with every convolution and linear at the peak" in done.stdout
