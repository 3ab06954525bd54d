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
# "<backend>[-bf16]": cyclediff on that backend, or diffusers (torch_dtype=torch.bfloat16 for -bf16)
IMPLS = ("onnxruntime", "openvino", "openvino-bf16", "torch", "torch-bf16", "diffusers", "diffusers-bf16")


def impl_dtype(impl: str) -> tuple[str, str]:
    """'openvino-bf16' -> ('openvino', 'bf16'); 'onnxruntime' -> ('onnxruntime', 'fp32')."""
    name, _, dtype = impl.partition("-")
    return name, dtype or "fp32"


def one(impl: str, size: int, folder: Path, steps: int, strength: float, device: str) -> dict:
    """Load `impl`, run one edit at size², return its peaks and time (this process only runs this)."""
    image = edit_latency.sample_image(size)
    name, dtype = impl_dtype(impl)
    if name == "diffusers":
        from diffusers import CycleDiffusionPipeline, DDIMScheduler

        ckpt = edit_latency.checkpoint_path(folder)
        pipe = CycleDiffusionPipeline.from_pretrained(ckpt, safety_checker=None, requires_safety_checker=False,
                                                      torch_dtype=torch.bfloat16 if dtype == "bf16" else None)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        run = lambda: pipe(prompt=TARGET, source_prompt=SOURCE, image=image, strength=strength,
                           num_inference_steps=steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(0))
    else:
        import cyclediff

        engine = cyclediff.Engine.load(folder, backend=name, dtype=dtype, device=device, progress=False)
        run = lambda: engine.edit(prompt=TARGET, source_prompt=SOURCE, image=image, strength=strength,
                                  num_inference_steps=steps, guidance_scale=7.5,
                                  generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    cuda = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {"impl": impl, "size": size, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_cuda": cuda, "seconds": seconds}


def child(args, impl: str, size: int, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", impl, "--sizes", str(size), "--engine", str(folder),
           "--steps", str(args.steps), "--strength", str(args.strength), "--device", args.device]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # a crash or OOM kill is a row
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
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one implementation in this process
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.one:
        print(json.dumps(one(args.one, sizes[0], Path(args.engine), args.steps, args.strength, args.device)))
        return
    impls = [b for b in args.backends.split(",") if b]
    if set(impls) - set(IMPLS):
        p.error(f"--backends must be a subset of {','.join(IMPLS)}")
    folder = export_dir(args)
    rows = []
    for size in sizes:
        for impl in impls:
            rows.append(child(args, impl, size, folder))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"one edit, {args.steps} steps x strength {args.strength}, guidance 7.5, {args.device}, "
          f"each in a fresh process ({folder})")
    print(table(rows))


if __name__ == "__main__":
    main()
