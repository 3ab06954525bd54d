"""Model FLOP utilization of the decoder step: counted UNet FLOPs / step time / a matmul peak measured in-run."""
from __future__ import annotations

import time

import torch


def matmul_peak_tflops(device: str, dtype: torch.dtype, n: int = 4096, repeat: int = 10) -> float:
    """Dense n×n×n matmul rate on this device and dtype, median of `repeat` (the ceiling MFU is quoted against)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)  # random, never zeros: zeros run faster than real data
    times = []
    for _ in range(repeat + 2):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    median = sorted(times[2:])[len(times[2:]) // 2]
    return 2 * n**3 / median / 1e12


def unet_step_tflop(engine, batch: int, latent_hw: tuple[int, int]) -> float | None:
    """FLOPs of one decoder UNet call of `batch` samples, counted by torch on the torch module (None if the
    engine does not run torch modules, e.g. ONNX Runtime: the count is the same model's, so read it there)."""
    from torch.utils.flop_counter import FlopCounterMode

    runner = engine.runners.get("unet")
    module = getattr(runner, "module", None)
    if module is None:
        return None
    d = engine.manifest.dims
    p = next(module.parameters())
    sample = torch.randn(batch, d.latent_channels, *latent_hw, device=p.device, dtype=p.dtype)
    t = torch.full((batch,), 500.0, device=p.device, dtype=p.dtype)
    emb = torch.randn(batch, d.text_len, d.text_width, device=p.device, dtype=p.dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(sample, t, emb)
    return counter.get_total_flops() / 1e12


def report(step_ms: float, tflop: float, peak: float) -> str:
    achieved = tflop / (step_ms / 1e3)
    return (f"decoder step: {tflop:.4g} TFLOP in {step_ms:.2f} ms = {achieved:.4g} TFLOP/s; "
            f"MFU {100 * achieved / peak:.1f}% of the {peak:.4g} TFLOP/s matmul peak measured in this run "
            f"(floor {1e3 * tflop / peak:.2f} ms, {step_ms / (1e3 * tflop / peak):.1f}x it)")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
