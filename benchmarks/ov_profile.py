"""Where the OpenVINO UNet call's time goes, and the step MFU the CPU's kernels allow.

    flock /tmp/cyclediff-heavy.lock python benchmarks/ov_profile.py --sizes 256,512   # SD v1.4 arch, bf16
    python benchmarks/ov_profile.py --engine exports/x --sizes 256 --peak 2.9          # an export, a known peak

The UNet is compiled as the openvino backend compiles it (engine/openvino_static.py: static shape, batch 1 by
default, the backend's compile_config) with the CPU plugin's per-layer counters on. Each layer's time goes to one
class: convolution, linear (FullyConnected / MatMul), attention (the ScaledDotProductAttention kernels) or
other (norms, reorders, splits, elementwise). FLOPs come from the source graph at the compiled shapes: 2·M·N·K
per convolution and MatMul, 4·B·H·L·S·D per attention, the ops torch's flop counter counts.

The bounds (the MFU target of issue 18 is 70 % of the best bf16 matmul rate on this CPU):
- "now": the call's FLOPs / its measured time / the peak.
- "GEMMs at peak": every convolution and linear at the peak; attention and other as measured.
- "... attention at the faster kernel": also attention at the faster of OpenVINO's and torch's
  scaled_dot_product_attention for the same shapes (timed here), the CPU attention kernels installed here.
- "nothing else costing time": only the GEMMs (at the peak, or the weight floor if that is longer) and that
  attention: the most this CPU's kernels allow.
- weight floor: the UNet's weights in the compute dtype read once per compiled-batch call, at this machine's
  memory bandwidth (a numpy copy): the least time a call takes whatever the kernels.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory  # noqa: E402
import mfu  # noqa: E402

CLASSES = ("convolution", "linear", "attention", "other")
GEMM_CLASSES = ("convolution", "linear")


@dataclass(frozen=True)
class Profile:
    """One compiled UNet at one latent size: a call's best time and each class's time, layers and FLOPs."""
    size: int  # image side; the latent side is size // the VAE's scale
    side: int
    batch: int
    call_s: float
    ms: dict[str, float]  # per class, one call, summed over layers (the counters' real time)
    layers: dict[str, int]
    gflop: dict[str, float]  # per class, one call
    attention: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # (q shape, k shape) of each attention op
    weight_bytes: int  # in the compute dtype


def unet_source(folder: Path) -> tuple[Path, int]:
    """The graph the openvino backend compiles (the export's IR when it matches this OpenVINO, else the ONNX) and
    the VAE's scale (image side / latent side)."""
    from cyclediff.export import openvino_ir
    from cyclediff.export.manifest import Manifest

    manifest = Manifest.load(folder)
    entry = manifest.models["unet"]
    ir = openvino_ir.lookup(manifest, entry.sha256)
    return folder / (ir["file"] if ir else entry.file), manifest.dims.vae_scale


def reshaped(path: Path, batch: int, side: int):
    """The source graph at static shapes (batch, 4, side, side), as OvSampleModel reshapes it."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    shapes = {}
    for port in model.inputs:
        rest = list(port.get_partial_shape())[1:]
        if port.get_any_name() == "sample":  # (B, C, H, W): H and W are the export's dynamic axes
            rest = [rest[0], side, side]
        rest = [d if isinstance(d, int) else d.get_length() for d in rest]
        shapes[port.get_any_name()] = [batch, *rest]
    model.reshape(shapes)
    return model


def source_counts(model, dtype: str) -> tuple[dict[str, float], tuple, int]:
    """(GFLOP per class, attention (q, k) shapes, weight bytes in the compute dtype) of a static graph."""
    gflop = collections.Counter()
    attention = []
    weights = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Constant" and op.get_element_type().is_real():
            weights += int(np.prod(op.get_output_shape(0))) * (2 if dtype == "bf16" else 4)
        elif kind == "Convolution":
            w = op.get_input_shape(1)  # (out, in, kh, kw)
            gflop["convolution"] += 2 * np.prod(op.get_output_shape(0)) * np.prod(w[1:]) / 1e9
        elif kind == "MatMul":
            a = op.get_input_shape(0)
            k = a[-2] if op.get_transpose_a() else a[-1]
            gflop["linear"] += 2 * np.prod(op.get_output_shape(0)) * k / 1e9
        elif kind == "ScaledDotProductAttention":
            q, k = tuple(op.get_input_shape(0)), tuple(op.get_input_shape(1))  # (B, H, L, D), (B, H, S, D)
            gflop["attention"] += 4 * np.prod(q) * k[-2] / 1e9
            attention.append((q, k))
    return dict(gflop), tuple(attention), weights


def layer_class(node_type: str, node_name: str) -> str:
    if "ScaledDotProductAttention" in node_name:
        return "attention"
    if node_type == "Convolution":
        return "convolution"
    if node_type in ("FullyConnected", "MatMul"):
        return "linear"
    return "other"


def profile(path: Path, size: int, side: int, batch: int, dtype: str, threads: int, repeat: int) -> Profile:
    import openvino as ov

    from cyclediff.engine.openvino_backend import compile_config

    model = reshaped(path, batch, side)
    gflop, attention, weight_bytes = source_counts(model, dtype)
    compiled = ov.Core().compile_model(model, "CPU", {**compile_config(dtype, threads), "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    rng = np.random.default_rng(0)
    feeds = {p.get_any_name(): rng.standard_normal(tuple(p.get_shape()), dtype=np.float32) for p in compiled.inputs}
    times = []
    for _ in range(repeat + 1):  # the first call packs the weights
        start = time.perf_counter()
        request.infer(feeds)
        times.append(time.perf_counter() - start)
    ms, layers = collections.Counter(), collections.Counter()
    for info in request.get_profiling_info():  # the last call's counters
        if info.status == info.Status.EXECUTED:
            cls = layer_class(info.node_type, info.node_name)
            ms[cls] += info.real_time.total_seconds() * 1e3
            layers[cls] += 1
    return Profile(size, side, batch, min(times[1:]), dict(ms), dict(layers), gflop, attention, weight_bytes)


def torch_attention_ms(shapes: tuple, dtype: str, threads: int, repeat: int = 3) -> float:
    """torch's scaled_dot_product_attention over the same (q, k) shapes, best of `repeat` per distinct shape."""
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    torch.set_num_threads(threads)
    total = 0.0
    for (q_shape, k_shape), count in collections.Counter(shapes).items():
        q = torch.randn(q_shape, dtype=torch_dtype)
        k, v = torch.randn(k_shape, dtype=torch_dtype), torch.randn(k_shape, dtype=torch_dtype)
        best = float("inf")
        with torch.inference_mode():
            for _ in range(repeat + 1):
                start = time.perf_counter()
                torch.nn.functional.scaled_dot_product_attention(q, k, v)
                best = min(best, time.perf_counter() - start)
        total += count * best * 1e3
    return total


def memory_gbs() -> float:
    """This machine's memory bandwidth, GB/s read + written: the best of 3 copies of 512 MiB."""
    a = np.ones(2 ** 27, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - start)
    return 2 * a.nbytes / best / 1e9


def bounds(p: Profile, peak: float, torch_attn_ms: float, gbs: float) -> dict[str, float]:
    """MFU (% of peak): now; with the GEMM classes at the peak; then also attention at the faster kernel; then
    with nothing but that attention and the GEMMs at the peak, but no faster than the weights can be read. The
    weight floor in ms. The counters' sum stands in for the call's time where a class is replaced."""
    total = sum(p.gflop.values())
    gemm_ms = sum(p.gflop.get(c, 0.0) for c in GEMM_CLASSES) / peak
    attention = min(torch_attn_ms, p.ms.get("attention", 0.0))  # the faster of the two kernels
    weight_floor_ms = p.weight_bytes / gbs / 1e6
    gemms_at_peak = gemm_ms + p.ms.get("attention", 0.0) + p.ms.get("other", 0.0)
    with_best_attention = gemm_ms + attention + p.ms.get("other", 0.0)
    attention_only = max(gemm_ms, weight_floor_ms) + attention  # nothing else costs time
    return {"now": 100 * total / p.call_s / 1e3 / peak, "gemms": 100 * total / gemms_at_peak / peak,
            "gemms+attn": 100 * total / with_best_attention / peak,
            "attention_only": 100 * total / attention_only / peak, "weight_floor_ms": weight_floor_ms}


def class_table(p: Profile, peak: float) -> list[str]:
    counted = sum(p.ms.values())
    lines = [f"### {p.size}² (latent {p.side}²), compiled batch {p.batch}: one call {p.call_s * 1e3:.0f} ms",
             "", "| class | layers | ms | share | GFLOP | TFLOP/s | of peak |", "|---|---|---|---|---|---|---|"]
    for cls in CLASSES:
        ms, gf = p.ms.get(cls, 0.0), p.gflop.get(cls, 0.0)
        rate = f"{gf / ms:.2f} | {100 * gf / ms / peak:.0f} %" if gf and ms else "- | -"
        lines.append(f"| {cls} | {p.layers.get(cls, 0)} | {ms:.1f} | {100 * ms / counted:.0f} % | {gf:.1f} | {rate} |")
    return lines


def bound_lines(p: Profile, peak: float, torch_attn_ms: float, gbs: float) -> list[str]:
    b = bounds(p, peak, torch_attn_ms, gbs)
    return ["", f"- step MFU now: {b['now']:.0f} %",
            f"- with every convolution and linear at the peak: {b['gemms']:.0f} %",
            f"- and attention at the faster kernel (torch {torch_attn_ms:.1f} ms, OpenVINO "
            f"{p.ms.get('attention', 0):.1f} ms): {b['gemms+attn']:.0f} %",
            f"- with nothing else costing time (GEMMs at the peak or the weight floor, attention at the faster "
            f"kernel): {b['attention_only']:.0f} %",
            f"- weight floor: {p.weight_bytes / 1e9:.2f} GB of weights per call at {gbs:.0f} GB/s = "
            f"{b['weight_floor_ms']:.0f} ms", ""]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engine", help="an existing export (default: build + export the SD v1.4 architecture)")
    p.add_argument("--arch", default="sd-v1-4", help="built-in architecture to build when --engine is not given")
    p.add_argument("--ckpt", default="tiny", help="checkpoint when --arch is empty")
    p.add_argument("--sizes", default="256,512", help="image sizes, comma-separated (default 256,512)")
    p.add_argument("--batch", type=int, default=1, help="compiled batch (the backend compiles 1; default 1)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--threads", type=int, default=None, help="default: the backend's (one per usable core)")
    p.add_argument("--repeat", type=int, default=3, help="timed calls per size, best taken (default 3)")
    p.add_argument("--peak", type=float, help="the matmul peak in TFLOP/s (default: measured, benchmarks/mfu.py)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from cyclediff.runtime.core.backends import threads_for

    args = parse(argv)
    threads = threads_for(args.threads)
    folder = memory.export_dir(args)
    path, scale = unet_source(folder)
    name = "bf16" if args.dtype == "bf16" else "fp32"
    peak = args.peak or max(r for k, r in mfu.cpu_matmul_peaks().items() if k.endswith(name))
    gbs = memory_gbs()
    print(f"UNet: {path} ({args.dtype}, {threads} threads); {name} matmul peak {peak:.3f} TFLOP/s; "
          f"memory {gbs:.1f} GB/s\n")
    for size in (int(s) for s in args.sizes.split(",")):
        p = profile(path, size, size // scale, args.batch, args.dtype, threads, args.repeat)
        torch_ms = torch_attention_ms(p.attention, args.dtype, threads)
        print("\n".join(class_table(p, peak) + bound_lines(p, peak, torch_ms, gbs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
