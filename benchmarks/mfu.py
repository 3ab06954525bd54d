"""Model FLOP utilization of the decoder step: counted UNet FLOPs / step time / a matmul peak measured in-run."""
from __future__ import annotations

import time

import torch


def matmul_peak_tflops(device: str, dtype: torch.dtype, n: int = 4096, repeat: int = 10) -> float:
    """Dense n×n×n matmul rate on this device and dtype, median of `repeat` (the ceiling MFU is quoted against)."""
    return gemm_tflops(device, dtype, (n, n, n), repeat)  # random inputs, never zeros: zeros run faster


def flop_counter():
    """torch's FlopCounterMode, also counting CPU attention: torch registers FLOP formulas for the CUDA attention
    kernels only, so on the CPU its count of an SD UNet left out 4·B·H·L·S·D per attention (5 % of the call at
    256², 16 % at 512²)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    return FlopCounterMode(display=False,
                           custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention})


def unet_step_tflop(engine, batch: int, latent_hw: tuple[int, int]) -> float | None:
    """FLOPs of one decoder UNet call of `batch` samples, counted by torch on the torch module (None if the
    engine does not run torch modules, e.g. ONNX Runtime: the count is the same model's, so read it there)."""
    runner = engine.runners.get("unet")
    module = getattr(runner, "module", None)
    if module is None:
        return None
    d = engine.manifest.dims
    p = next(module.parameters())
    sample = torch.randn(batch, d.latent_channels, *latent_hw, device=p.device, dtype=p.dtype)
    t = torch.full((batch,), 500.0, device=p.device, dtype=p.dtype)
    emb = torch.randn(batch, d.text_len, d.text_width, device=p.device, dtype=p.dtype)
    counter = flop_counter()
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


# The GEMMs an SD v1.4 UNet step runs most (M tokens x K -> N), at 256² and 512² (latent 32² / 64²: 1024 / 4096
# tokens at the top level, batch 2 with guidance): attention projections (320 -> 320), feed-forward (320 -> 2560,
# 1280 -> 320: GEGLU's 4x) and the deeper levels' 640 / 1280 channels. On oneDNN with AMX these run faster than a
# square n³ GEMM (3.3-3.9 against 2.3 TFLOP/s on a 2-vCPU Xeon), so a square-only peak would overstate MFU.
UNET_GEMMS = ((8192, 320, 320), (8192, 320, 2560), (8192, 1280, 320), (2048, 640, 640), (2048, 640, 5120),
              (512, 1280, 1280), (512, 1280, 10240))
SQUARE_GEMMS = ((2048, 2048, 2048), (4096, 4096, 4096))


def cpu_matmul_peaks(shapes: tuple[tuple[int, int, int], ...] = SQUARE_GEMMS + UNET_GEMMS,
                     repeat: int = 6) -> dict[str, float]:
    """The best matmul rate (TFLOP/s) each library reaches on this CPU over `shapes` (m, k, n): torch and OpenVINO,
    fp32 and bf16. Keys 'torch fp32', 'openvino bf16', ...; OpenVINO where it is installed."""
    peaks = {}
    for name, rates in cpu_matmul_rates(shapes, repeat).items():
        peaks[name] = max(rates.values())
    return peaks


def cpu_matmul_rates(shapes: tuple[tuple[int, int, int], ...] = SQUARE_GEMMS + UNET_GEMMS,
                     repeat: int = 6) -> dict[str, dict[tuple[int, int, int], float]]:
    """Every (library dtype) -> {shape: TFLOP/s}."""
    rates: dict[str, dict[tuple[int, int, int], float]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = "fp32" if dtype == torch.float32 else "bf16"
        rates[f"torch {name}"] = {mkn: gemm_tflops("cpu", dtype, mkn, repeat) for mkn in shapes}
        try:
            rates[f"openvino {name}"] = {mkn: _openvino_matmul_tflops(name, mkn, repeat) for mkn in shapes}
        except ImportError:
            pass
    return rates


def gemm_tflops(device: str, dtype: torch.dtype, mkn: tuple[int, int, int], repeat: int = 6) -> float:
    """(m, k) @ (k, n) rate on this device and dtype, median of `repeat` after 2 warm-ups."""
    m, k, n = mkn
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    times = []
    for _ in range(repeat + 2):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / sorted(times[2:])[len(times[2:]) // 2] / 1e12


def _openvino_matmul_tflops(dtype: str, mkn: tuple[int, int, int], repeat: int) -> float:
    """One MatMul (m, k) @ constant (k, n) on OpenVINO's CPU plugin at this precision hint."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    m, k, n = mkn
    x = ops.parameter([m, k], ov.Type.f32)
    weight = ops.constant(np.random.default_rng(0).standard_normal((k, n), dtype=np.float32))
    compiled = ov.Core().compile_model(ov.Model([ops.matmul(x, weight, False, False)], [x]), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32" if dtype == "fp32" else "bf16",
                                        "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    data = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    times = []
    for _ in range(repeat + 2):
        start = time.perf_counter()
        request.infer({0: data})
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / sorted(times[2:])[len(times[2:]) // 2] / 1e12


def unet_step_tflops(checkpoint: str, sizes: tuple[int, ...], batch: int = 2) -> dict[int, float]:
    """FLOPs (TFLOP) of one UNet call of `batch` samples at each size² pixels (latent size/8), counted by torch on
    the checkpoint's UNet running one sample (FLOPs are linear in the batch); the weights are freed after."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(checkpoint, subfolder="unet").eval()
    out = {}
    for size in sizes:
        side = size // 8
        args = (torch.randn(1, unet.config.in_channels, side, side), torch.full((1,), 500.0),
                torch.randn(1, 77, unet.config.cross_attention_dim))
        counter = flop_counter()
        with counter, torch.inference_mode():
            unet(*args)
        out[size] = batch * counter.get_total_flops() / 1e12
    return out


def main() -> None:
    """python benchmarks/mfu.py: this CPU's matmul rates per library, dtype and shape, and the peak MFU is quoted
    against (the best of them)."""
    rates = cpu_matmul_rates()
    shapes = list(next(iter(rates.values())))
    print(f"{'m x k x n':<20}" + "".join(f"{name:>16}" for name in rates))
    for mkn in shapes:
        print(f"{'x'.join(map(str, mkn)):<20}" + "".join(f"{rates[name][mkn]:16.3f}" for name in rates))
    print(f"{'peak':<20}" + "".join(f"{max(r.values()):16.3f}" for r in rates.values()) + "   TFLOP/s")


if __name__ == "__main__":
    main()
