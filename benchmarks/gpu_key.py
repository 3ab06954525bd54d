"""The GPU run's key measurement (issue 23), first and in one process, its JSON rewritten after every row.

    python benchmarks/gpu_key.py --engine DIR --json OUT.json                          # on the GPU: 512², 50 x 0.8
    python benchmarks/gpu_key.py --engine DIR --json OUT.json --device cpu --steps 4   # CPU smoke (tiny)

Rows, each implementation loaded alone (the one before is freed first), in this order so that a run cut short
keeps the rows that matter most:
  cyclediff fp16 with CUDA graphs, cyclediff fp16 eager (cuda_graphs=False), diffusers fp16 eager
  (CycleDiffusionPipeline), the fp32 reference (cyclediff torch fp32, TF32 off: diffusers' numerics to ~1e-6).
Per row: load s; first edit (encode + decode) and repeat edit (decode of a cached LatentCode; diffusers has no
cache, so a full edit) as medians of --repeat after --warmup; the decoder step (a latent-only decode / steps) and
its MFU against a matmul peak measured now; peak memory = torch's allocator peak during load and runs minus what
was allocated before the load; the CUDA graphs' report (signatures, phases, failed captures); the SDPA kernels.
Then a fidelity row: PSNR and latent relative error of each fp16 result against the fp32 reference.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edit_latency as common  # noqa: E402
from fidelity import guard_check, psnr  # noqa: E402

TARGET = common.TARGETS[0]


class Recorder:
    """The result file, rewritten whole (temp file + rename) after every row: a killed run keeps what it had."""

    def __init__(self, path: Path, setup: dict):
        self.path, self.data = path, {"setup": setup, "rows": [], "done": False}
        self.save()

    def add(self, row: dict) -> None:
        self.data["rows"].append(row)
        print(json.dumps(row), flush=True)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def median_ms(fn, args) -> float:
    """edit_latency's timing (--warmup runs, then the median of --repeat, synchronized on CUDA)."""
    setup = common.Setup(args.device, "fp16", args.steps, args.strength, args.guidance_scale, args.eta, 1,
                         args.warmup, args.repeat)
    return common.median_ms(fn, setup)


def free(device: str) -> int:
    """Collect what the last row left; return the bytes still allocated (the next row's baseline)."""
    gc.collect()
    if not device.startswith("cuda"):
        return 0
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_mib(device: str, before: int) -> float | None:
    return (torch.cuda.max_memory_allocated() - before) / 2**20 if device.startswith("cuda") else None


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


# ---- the implementations -----------------------------------------------------------------------------------
def cyclediff_row(label: str, folder: Path, image, args, dtype: str, graphs: bool, outputs: dict) -> dict:
    from cyclediff import Engine

    before = free(args.device)
    t0 = time.perf_counter()
    engine = Engine.load(folder, backend="torch", device=args.device, dtype=dtype, cuda_graphs=graphs,
                         progress=False)
    load_s = time.perf_counter() - t0
    kw = {"strength": args.strength, "num_inference_steps": args.steps, "eta": args.eta}

    def encode():
        return engine.encode(image, common.SOURCE, generator=gen(), **kw)

    def decode(c, output_type: str = "pil"):
        return engine.decode(c, TARGET, guidance_scale=args.guidance_scale, output_type=output_type)

    code = encode()
    first = median_ms(lambda: decode(encode()), args)
    repeat = median_ms(lambda: decode(code), args)
    step_ms = median_ms(lambda: decode(code, "latent"), args) / code.noises.shape[0]
    outputs[label] = (decode(code, "latent").images.float().cpu(), decode(code, "np").images)
    row = {"impl": label, "load_s": load_s, "first_edit_ms": first, "repeat_edit_ms": repeat,
           "decoder_step_ms": step_ms, "peak_mib": peak_mib(args.device, before),
           "cuda_graphs": engine.dispatcher.graph_report(), "mfu": mfu(engine, image, step_ms, dtype, args)}
    if dtype == "fp16":  # the fp16 VAE decoder re-runs in fp32 what it overflows on (as fidelity.py checks)
        row["vae_guard"] = guard_check(engine)
    return row  # the engine goes with this frame; free() collects it before the next row


def diffusers_row(label: str, folder: Path, image, args, outputs: dict) -> dict:
    before = free(args.device)
    t0 = time.perf_counter()
    pipe = common.load_diffusers(common.checkpoint_path(folder), argparse.Namespace(device=args.device,
                                                                                   dtype="fp16"))
    load_s = time.perf_counter() - t0

    def edit(output_type: str = "pil"):
        return pipe(prompt=TARGET, source_prompt=common.SOURCE, image=image, strength=args.strength,
                    num_inference_steps=args.steps, guidance_scale=args.guidance_scale, eta=args.eta,
                    generator=gen(), output_type=output_type).images

    first = median_ms(edit, args)
    latent = edit("latent")
    outputs[label] = (torch.as_tensor(latent).float().cpu(), np.asarray(edit("np")))
    row = {"impl": label, "load_s": load_s, "first_edit_ms": first, "repeat_edit_ms": first,
           "note": "no cache: its repeat edit is a full edit", "peak_mib": peak_mib(args.device, before),
           "attention_processor": type(next(iter(pipe.unet.attn_processors.values()))).__name__}
    return row


def mfu(engine, image, step_ms: float, dtype: str, args) -> dict:
    from mfu import matmul_peak_tflops, unet_step_tflop

    d = engine.manifest.dims
    batch = 2 if args.guidance_scale > 1 else 1
    tflop = unet_step_tflop(engine, batch, (image.size[1] // d.vae_scale, image.size[0] // d.vae_scale))
    if not tflop or not args.device.startswith("cuda"):
        return {"tflop": tflop}
    peak = matmul_peak_tflops(args.device, torch.float16 if dtype == "fp16" else torch.float32)
    achieved = tflop / (step_ms / 1e3)
    return {"tflop": tflop, "achieved_tflops": achieved, "peak_tflops": peak, "mfu": achieved / peak}


def sdpa_kernels(args, heads: int = 8, tokens: int = 4096, dim: int = 40) -> dict:
    """The kernels torch runs for the UNet's largest attention (SD v1.4 at 512²: 8 heads, 4096 tokens, 40 dims),
    fp16 on the device: which SDPA backend is in use."""
    if not args.device.startswith("cuda"):
        return {"device": args.device, "kernels": []}
    from torch.profiler import ProfilerActivity, profile

    q = torch.randn(2, heads, tokens, dim, device=args.device, dtype=torch.float16)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        torch.cuda.synchronize()
    names = sorted({e.key for e in prof.key_averages() if e.device_type.name == "CUDA"})
    enabled = {b: getattr(torch.backends.cuda, f"{b}_sdp_enabled")()
               for b in ("flash", "mem_efficient", "cudnn", "math")}
    return {"kernels": names[:8], "enabled": enabled}


def fidelity(outputs: dict, ref_label: str) -> dict:
    ref_latent, ref_image = outputs[ref_label]
    row = {"impl": "fidelity vs " + ref_label}
    for label, (latent, image) in outputs.items():
        if label == ref_label:
            continue
        rel = float((latent.float() - ref_latent.float()).norm() / ref_latent.float().norm())
        row[label] = {"psnr_db": psnr(image, ref_image), "latent_rel_err": rel,
                      "finite": bool(np.isfinite(image).all())}
    return row


# ---- main ------------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", required=True, help="an export (cyclediff-export --torch-only is enough)")
    p.add_argument("--arch", choices=["sd-v1-4", "tiny"],
                   help="where --engine holds no export yet: make one (torch-only) of SD v1.4's architecture with "
                        "random weights (built once, cached) or of the built-in tiny")
    p.add_argument("--export-only", action="store_true", help="make or check the export, then stop")
    p.add_argument("--json", help="where the rows go (rewritten after every row); required unless --export-only")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, help="image side in pixels (default: the checkpoint's native size)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--strength", type=float, default=0.8)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--eta", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    if not args.json and not args.export_only:
        p.error("--json OUT is required (or --export-only)")
    if args.warmup < 1 or args.repeat < 1:
        p.error("need --warmup >= 1 (the CUDA graphs are captured there) and --repeat >= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available() and not args.export_only:
        p.error("--device cuda but torch sees no CUDA device; use --device cpu for the smoke run")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from cyclediff.export.manifest import Manifest

    folder = prepared(Path(args.engine), args.arch)
    if args.export_only:
        print(f"export ready: {folder}")
        return 0
    image = common.sample_image(args.size or Manifest.load(folder, verify_files=False).sample_size)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    rec = Recorder(Path(args.json), {**vars(args), "image": image.size[0], "device_name": name,
                                     "torch": torch.__version__})
    outputs: dict = {}
    steps = [("cyclediff fp16 + CUDA graphs", lambda lb: cyclediff_row(lb, folder, image, args, "fp16", True, outputs)),
             ("cyclediff fp16 eager", lambda lb: cyclediff_row(lb, folder, image, args, "fp16", False, outputs)),
             ("diffusers fp16 eager", lambda lb: diffusers_row(lb, folder, image, args, outputs)),
             ("fp32 reference", lambda lb: reference_row(lb, folder, image, args, outputs))]
    failed = 0
    for label, run in steps:
        try:
            rec.add(run(label))
        except Exception as err:  # noqa: BLE001 - one failed row must not lose the others
            failed += 1
            rec.add({"impl": label, "error": f"{type(err).__name__}: {err}"[:400]})
    if "fp32 reference" in outputs:
        rec.add(fidelity(outputs, "fp32 reference"))
    try:  # after the rows: a profiler that fails here costs nothing measured
        rec.data["sdpa"] = sdpa_kernels(args)
    except Exception as err:  # noqa: BLE001
        rec.data["sdpa"] = {"error": f"{type(err).__name__}: {err}"[:300]}
    rec.data["targets"] = targets(rec.data["rows"])
    rec.data["done"] = True
    rec.save()
    print_table(rec.data)
    return 1 if failed else 0


def prepared(folder: Path, arch: str | None) -> Path:
    """folder as it is (no --arch), or exported into (torch-only: no ONNX Runtime or OpenVINO steps) from --arch;
    a re-run's export reuses every model whose content key is unchanged."""
    from cyclediff.export.manifest import MANIFEST
    from cyclediff.export.pipeline import export
    from cyclediff.export.tiny import cache_root

    if arch is None:
        if not (folder / MANIFEST).is_file():
            raise SystemExit(f"gpu_key.py: error: {folder} holds no export; pass --arch sd-v1-4 (or tiny) to make one")
        return folder
    ckpt = str(common.build_sd14_random(cache_root() / "bench" / "sd-v1-4-random")) if arch == "sd-v1-4" else "tiny"
    t0 = time.perf_counter()
    export(ckpt, folder, quiet=True, torch_only=True)
    print(f"exported {ckpt} (torch-only) to {folder} in {time.perf_counter() - t0:.0f} s")
    return folder


def targets(rows: list[dict]) -> dict:
    """Issue 23's targets, recorded (not gated): first edit >= 3x diffusers fp16 eager, repeat >= 5x, decoder step
    MFU >= 40 %, fp16 PSNR >= 35 dB against fp32."""
    by = {r["impl"]: r for r in rows}
    ours, ref = by.get("cyclediff fp16 + CUDA graphs", {}), by.get("diffusers fp16 eager", {})
    fid = next((r for r in rows if r["impl"].startswith("fidelity")), {}).get("cyclediff fp16 + CUDA graphs", {})
    got = {}
    if "first_edit_ms" in ours and "first_edit_ms" in ref:
        got["first_edit_x"] = ref["first_edit_ms"] / ours["first_edit_ms"]
        got["repeat_edit_x"] = ref["first_edit_ms"] / ours["repeat_edit_ms"]
    if ours.get("mfu", {}).get("mfu") is not None:
        got["decoder_step_mfu"] = ours["mfu"]["mfu"]
    if "psnr_db" in fid:
        got["psnr_db"] = fid["psnr_db"]
    want = {"first_edit_x": 3.0, "repeat_edit_x": 5.0, "decoder_step_mfu": 0.40, "psnr_db": 35.0}
    return {k: {"value": v, "target": want[k], "met": v >= want[k]} for k, v in got.items()}


def reference_row(label: str, folder: Path, image, args, outputs: dict) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # a true fp32 reference
    return cyclediff_row(label, folder, image, args, "fp32", False, outputs)


def print_table(data: dict) -> None:
    rows = [r for r in data["rows"] if "first_edit_ms" in r]
    base = next((r for r in rows if r["impl"].startswith("diffusers")), None)
    print(f"\n{'implementation':<30} {'first ms':>9} {'x diff.':>8} {'repeat ms':>10} {'x diff.':>8} "
          f"{'step ms':>8} {'MFU':>6} {'peak MiB':>9}")
    for r in rows:
        x1 = f"{base['first_edit_ms'] / r['first_edit_ms']:.2f}" if base else "-"
        x2 = f"{base['first_edit_ms'] / r['repeat_edit_ms']:.2f}" if base else "-"
        step = f"{r['decoder_step_ms']:.2f}" if "decoder_step_ms" in r else "-"
        m = r.get("mfu", {}).get("mfu")
        mem = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"{r['impl']:<30} {r['first_edit_ms']:9.1f} {x1:>8} {r['repeat_edit_ms']:10.1f} {x2:>8} {step:>8} "
              f"{'-' if m is None else f'{100 * m:.1f}%':>6} {mem:>9}")
    for r in data["rows"]:
        if r["impl"].startswith("fidelity"):
            for label, f in r.items():
                if isinstance(f, dict):
                    print(f"{label}: PSNR {f['psnr_db']:.2f} dB, latent rel err {f['latent_rel_err']:.2e} vs fp32")
        if "error" in r:
            print(f"{r['impl']}: FAILED {r['error']}")
    for k, t in data.get("targets", {}).items():
        print(f"target {k}: {t['value']:.3g} (want >= {t['target']}) {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
