"""Peak memory of one edit in a fresh process: cyclediff (onnxruntime, torch) against diffusers' CycleDiffusionPipeline.

    python benchmarks/memory.py                                   # SD v1.4 architecture, 256/512/768, all of them
    python benchmarks/memory.py --sizes 256 --backends onnxruntime,openvino-bf16,diffusers,diffusers-bf16

Each (size, implementation) runs in its own process (so the peak is that edit's alone): load, then one edit of
--steps (10) x --strength (0.8) on the bundled sample resized to size², guidance 7.5. It reports the process's
peak RSS (ru_maxrss: weights + activations + buffers), on CUDA also torch's peak allocated memory, and the
edit's seconds (load excluded). The SD v1.4-architecture checkpoint (random weights) is built and exported once
into $CYCLEDIFF_CACHE/bench/ by benchmarks/edit_latency.py's builder.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import edit_latency

SOURCE, TARGET = edit_latency.SOURCE, edit_latency.TARGETS[0]
# "<backend>[-bf16]": cyclediff on that backend, or diffusers (torch_dtype=torch.bfloat16 for -bf16);
# "native-openvino[-bf16]": the C++ host (libcyclediff's OpenVINO executor, native/example/edit_timing.c)
IMPLS = ("onnxruntime", "openvino", "openvino-bf16", "torch", "torch-bf16", "diffusers", "diffusers-bf16",
         "native-openvino", "native-openvino-bf16")
NATIVE_HOST = Path(__file__).resolve().parents[1] / "build/native/native/example/cyclediff_edit_timing"


def impl_dtype(impl: str) -> tuple[str, str]:
    """'openvino-bf16' -> ('openvino', 'bf16'); 'onnxruntime' -> ('onnxruntime', 'fp32')."""
    return (impl[:-5], "bf16") if impl.endswith("-bf16") else (impl, "fp32")


def one(impl: str, size: int, folder: Path, steps: int, strength: float, device: str, timings: bool = False,
        images_dir: str | None = None) -> dict:
    """Load `impl`, run one edit at size², return its peaks and time (this process only runs this).

    timings: also the load, a second (warm) edit, a decode of a cached LatentCode (cyclediff; diffusers has no
    cache: its repeat is the warm edit) and one guided decoder UNet call (batch 2) alone, after the peak is read."""
    image = edit_latency.sample_image(size)
    name, dtype = impl_dtype(impl)
    t0 = time.perf_counter()
    edit, prepare, repeat, unet = _diffusers(folder, dtype, device, image, steps, strength) \
        if name == "diffusers" else _cyclediff(folder, name, dtype, device, image, steps, strength)
    load_s = time.perf_counter() - t0
    result = {}
    seconds = _timed(lambda: result.setdefault("images", edit().images), device)
    cuda = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    row = {"impl": impl, "size": size, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "peak_cuda": cuda, "seconds": seconds}
    if timings:
        row.update(load_s=load_s, warm_s=_timed(edit, device))
        prepare()
        # diffusers has no cache: its repeat edit is the warm edit again, so it is not run a third time
        row.update(repeat_s=row["warm_s"] if repeat is edit else _timed(repeat, device),
                   unet_step_s=min(_timed(unet, device) for _ in range(3)))
    if images_dir:  # the first edit's picture, for the fidelity table (bf16 against fp32 of the same family)
        import numpy as np

        path = Path(images_dir) / f"{impl}-{size}.npy"
        np.save(path, np.asarray(result["images"][0], dtype=np.float32) / 255.0)
        row["image"] = str(path)
    return row


def _timed(fn, device: str) -> float:
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _diffusers(folder: Path, dtype: str, device: str, image, steps: int, strength: float):
    from diffusers import CycleDiffusionPipeline, DDIMScheduler

    ckpt = edit_latency.checkpoint_path(folder)
    pipe = CycleDiffusionPipeline.from_pretrained(ckpt, safety_checker=None, requires_safety_checker=False,
                                                  torch_dtype=torch.bfloat16 if dtype == "bf16" else None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    edit = lambda: pipe(prompt=TARGET, source_prompt=SOURCE, image=image, strength=strength,
                        num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(0))
    p = next(pipe.unet.parameters())
    feeds = _unet_feeds(pipe.unet.config.cross_attention_dim, image.size, p.device, p.dtype)

    def unet():
        with torch.inference_mode():
            pipe.unet(*feeds)

    return edit, lambda: None, edit, unet


def _cyclediff(folder: Path, backend: str, dtype: str, device: str, image, steps: int, strength: float):
    import cyclediff

    engine = cyclediff.Engine.load(folder, backend=backend, dtype=dtype, device=device, progress=False)
    edit = lambda: engine.edit(prompt=TARGET, source_prompt=SOURCE, image=image, strength=strength,
                               num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(0))
    code = []  # the repeat edit decodes one cached LatentCode: made by prepare(), untimed
    prepare = lambda: code.append(engine.encode(image, SOURCE, strength=strength, num_inference_steps=steps,
                                                generator=torch.Generator().manual_seed(0)))
    decode = lambda: engine.decode(code[-1], TARGET, guidance_scale=7.5)
    sample, t, emb = _unet_feeds(engine.manifest.dims.text_width, image.size, engine.device, torch.float32)
    out = {"noise_pred": torch.empty_like(sample)}
    unet = lambda: engine.runners["unet"]({"sample": sample, "timestep": t, "encoder_hidden_states": emb}, out)
    return edit, prepare, decode, unet


def _unet_feeds(width: int, size: tuple[int, int], dev, dtype):
    """One guided decoder step's UNet inputs: batch 2 at the image's latent size."""
    h, w = size[1] // 8, size[0] // 8
    g = torch.Generator().manual_seed(0)
    return (torch.randn(2, 4, h, w, generator=g).to(dev, dtype), torch.full((2,), 500.0, device=dev, dtype=dtype),
            torch.randn(2, 77, width, generator=g).to(dev, dtype))


def native_child(args, impl: str, size: int, folder: Path) -> dict:
    """The C++ host's row: its own process (no Python, no torch), the same image, prompts and edit; its seed draws
    from libcyclediff's portable generator, so its picture is compared only with its own fp32 edit."""
    import tempfile

    import numpy as np
    import PIL.Image

    host = Path(args.native_host)
    if not host.is_file():
        return {"impl": impl, "size": size, "error": f"no C++ host at {host}: build it (native/README.md)"}
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "input.png", Path(tmp) / "output.png"
        edit_latency.sample_image(size).save(src)
        cmd = [str(host), str(folder), str(src), str(out), SOURCE, TARGET, str(args.steps), str(args.strength), "0",
               "openvino", impl_dtype(impl)[1]]
        row = run_row(cmd, impl, size)
        if "error" in row:
            return row
        row = {"impl": impl, "size": size, "peak_cuda": None, **row}
        if args.save_images:
            path = Path(args.save_images) / f"{impl}-{size}.npy"
            np.save(path, np.asarray(PIL.Image.open(out).convert("RGB"), dtype=np.float32) / 255.0)
            row["image"] = str(path)
    return row


def child(args, impl: str, size: int, folder: Path) -> dict:
    if impl.startswith("native-"):
        return native_child(args, impl, size, folder)
    cmd = [sys.executable, __file__, "--one", impl, "--sizes", str(size), "--engine", str(folder),
           "--steps", str(args.steps), "--strength", str(args.strength), "--device", args.device]
    cmd += ["--timings"] if args.timings else []
    cmd += ["--save-images", args.save_images] if args.save_images else []
    return run_row(cmd, impl, size)


def run_row(cmd: list[str], impl: str, size: int) -> dict:
    """Run one row's process; its last stdout line is the row (JSON). A crash or OOM kill is an error row."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return {"impl": impl, "size": size, "error": f"exit {done.returncode}: {tail[:120]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| size | implementation | peak RSS (GB) | peak CUDA (GB) | edit (s) | RSS vs diffusers |",
             "|---|---|---|---|---|---|"]
    ref = {r["size"]: r.get("peak_rss") for r in rows if r["impl"] == "diffusers"}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']}² | {r['impl']} | {r['error']} | | | |")
            continue
        cuda = f"{r['peak_cuda'] / 1e9:.2f}" if r["peak_cuda"] is not None else "-"
        vs = f"{r['peak_rss'] / ref[r['size']]:.2f}x" if ref.get(r["size"]) else "-"
        lines.append(f"| {r['size']}² | {r['impl']} | {r['peak_rss'] / 1e9:.2f} | {cuda} | {r['seconds']:.1f} | {vs} |")
    return "\n".join(lines)


def export_dir(args) -> Path:
    """--engine as given; else the SD v1.4-architecture (or --ckpt) export, made once under $CYCLEDIFF_CACHE/bench."""
    if args.engine:
        return Path(args.engine)
    from cyclediff.export.pipeline import export
    from cyclediff.export.tiny import cache_root

    root = cache_root() / "bench"
    ckpt = str(edit_latency.build_sd14_random(root / "sd-v1-4-random")) if args.arch == "sd-v1-4" else args.ckpt
    out = root / f"export-{args.arch or Path(ckpt).name}"
    export(ckpt, out, quiet=True)  # re-runs reuse every unchanged model
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,512,768", help="comma-separated image sides (multiples of 64)")
    p.add_argument("--backends", default=",".join(IMPLS), help=f"comma-separated subset of {','.join(IMPLS)}")
    p.add_argument("--engine", help="an existing export of the checkpoint (default: build + export SD v1.4 arch)")
    p.add_argument("--arch", default="sd-v1-4", help="built-in architecture to build when --engine is not given")
    p.add_argument("--ckpt", default="tiny", help="checkpoint when --arch is empty")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--strength", type=float, default=0.8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--timings", action="store_true",
                   help="also time the load, a warm edit, a repeat edit (decode of a cached code) and one guided "
                        "UNet step, with its MFU against the CPU's fp32 and bf16 matmul peaks measured first")
    p.add_argument("--json", help="also write the rows (and peaks) to this file")
    p.add_argument("--save-images", metavar="DIR",
                   help="keep each first edit's picture in DIR and print the bf16-vs-fp32 PSNR of each family")
    p.add_argument("--native-host", default=str(NATIVE_HOST),
                   help="the C++ host's timing program for the native-* rows (default: %(default)s, built by "
                        "native/README.md's build commands)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one implementation in this process
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.one:
        print(json.dumps(one(args.one, sizes[0], Path(args.engine), args.steps, args.strength, args.device,
                             args.timings, args.save_images)))
        return
    impls = [b for b in args.backends.split(",") if b]
    if set(impls) - set(IMPLS):
        p.error(f"--backends must be a subset of {','.join(IMPLS)}")
    folder = export_dir(args)
    if args.save_images:
        Path(args.save_images).mkdir(parents=True, exist_ok=True)
    peaks = cpu_peaks() if args.timings and args.device == "cpu" else {}
    rows = []
    for size in sizes:
        for impl in impls:
            rows.append(child(args, impl, size, folder))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            _save(args.json, rows, peaks)  # after every row: a killed run keeps what it measured
    print(f"one edit, {args.steps} steps x strength {args.strength}, guidance 7.5, {args.device}, "
          f"each in a fresh process ({folder})")
    print(table(rows))
    if args.timings:
        print(timing_table(rows, peaks, folder))
        if any(r["impl"].startswith("native-") for r in rows):
            print(native_table(rows))
    if args.save_images:
        print(fidelity_table(rows))


def fidelity_table(rows: list[dict]) -> str:
    """PSNR (dB, pictures in [0, 1]) of each bf16 edit against the fp32 edit of the same implementation family:
    same checkpoint, image and seed. Also cyclediff's fp32 backends against diffusers fp32."""
    import numpy as np

    pics = {(r["impl"], r["size"]): np.load(r["image"]) for r in rows if "image" in r}
    lines = ["| size | bf16 (or fp32) edit | against | PSNR (dB) |", "|---|---|---|---|"]
    for (impl, size), pic in pics.items():
        name, dtype = impl_dtype(impl)
        # native fp32 draws its own noise (not torch's): no diffusers comparison for it
        ref = name if dtype == "bf16" else ("diffusers" if name not in ("diffusers", "native-openvino") else None)
        if ref and (ref, size) in pics:
            mse = float(np.mean((pic.astype(np.float64) - pics[(ref, size)]) ** 2))
            lines.append(f"| {size}² | {impl} | {ref} | {10 * np.log10(1 / mse) if mse else float('inf'):.1f} |")
    return "\n".join(lines)


def _save(path: str | None, rows: list[dict], peaks: dict) -> None:
    if path:
        Path(path).write_text(json.dumps({"peaks_tflops": peaks, "rows": rows}, indent=1))


def cpu_peaks() -> dict[str, float]:
    """Best dense matmul rate (TFLOP/s) that torch and OpenVINO reach here, per dtype; printed, and MFU's base."""
    from mfu import cpu_matmul_peaks

    peaks = cpu_matmul_peaks()
    print("matmul peaks (TFLOP/s): " + ", ".join(f"{k} {v:.3f}" for k, v in peaks.items()), file=sys.stderr)
    return peaks


def timing_table(rows: list[dict], peaks: dict[str, float], folder: Path) -> str:
    """Times per implementation; ratios against onnxruntime (fp32) and diffusers fp32/bf16 at the same size;
    MFU of the guided UNet step against the best matmul peak of the row's dtype."""
    from mfu import unet_step_tflops

    flops = unet_step_tflops(str(edit_latency.checkpoint_path(folder)), tuple(sorted({r["size"] for r in rows})))
    lines = ["| size | implementation | load (s) | first edit, cold (s) | edit (s) | repeat edit (s) | UNet step (s) "
             "| step MFU | peak RSS (GB) | edit vs onnxruntime | vs diffusers | vs diffusers bf16 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {(r["size"], r["impl"]): r for r in rows if "error" not in r}
    for r in rows:
        if "error" in r or "warm_s" not in r:
            continue
        tflop, step = flops[r["size"]], r.get("unet_step_s")  # the C++ host times whole edits only
        peak = max(v for k, v in peaks.items() if k.endswith(impl_dtype(r["impl"])[1])) if peaks else None
        mfu = f"{100 * tflop / step / peak:.0f}%" if peak and step else "-"
        ratios = [_ratio(base.get((r["size"], ref)), r) for ref in ("onnxruntime", "diffusers", "diffusers-bf16")]
        lines.append(f"| {r['size']}² | {r['impl']} | {r['load_s']:.1f} | {r['seconds']:.1f} | {r['warm_s']:.1f} | "
                     f"{r['repeat_s']:.1f} | {f'{step:.2f}' if step else '-'} | {mfu} | {r['peak_rss'] / 1e9:.2f} | "
                     + " | ".join(ratios) + " |")
    return "\n".join(lines)


def native_table(rows: list[dict]) -> str:
    """Each C++ host row against the fastest Python cyclediff row of the same dtype and size (warm edits)."""
    header = ("| size | C++ host | its warm edit (s) | peak RSS (GB) | libtorch loaded | fastest Python, same dtype | "
              "its warm edit (s) | its peak RSS (GB) | C++ speed-up |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    done = [r for r in rows if "warm_s" in r]
    for r in (r for r in done if r["impl"].startswith("native-")):
        dtype = impl_dtype(r["impl"])[1]
        same = [p for p in done if p["size"] == r["size"] and impl_dtype(p["impl"])[1] == dtype
                and not p["impl"].startswith(("native-", "diffusers"))]
        if not same:
            continue
        best = min(same, key=lambda p: p["warm_s"])
        lines.append(f"| {r['size']}² | {r['impl']} | {r['warm_s']:.1f} | {r['peak_rss'] / 1e9:.2f} | "
                     f"{'yes' if r.get('libtorch_loaded') else 'no'} | {best['impl']} | {best['warm_s']:.1f} | "
                     f"{best['peak_rss'] / 1e9:.2f} | {best['warm_s'] / r['warm_s']:.2f}x |")
    return "\n".join(lines)


def _ratio(ref: dict | None, row: dict) -> str:
    """ref's warm edit / row's warm edit (higher: row is faster)."""
    return f"{ref['warm_s'] / row['warm_s']:.2f}x" if ref and "warm_s" in ref else "-"


if __name__ == "__main__":
    main()
