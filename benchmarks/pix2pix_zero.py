"""Pix2Pix-Zero: invert + edit time and peak memory, cyclediff against diffusers' StableDiffusionPix2PixZeroPipeline.

    python benchmarks/pix2pix_zero.py                          # tiny checkpoint, CPU
    python benchmarks/pix2pix_zero.py --arch sd-v1-4 --size 256 --steps 10   # SD v1.4 architecture (random weights)

Each implementation runs in its own process (so its peak is its own): load, then one inversion and one edit
of --steps steps at --size², guidance 7.5, cross-attention guidance 0.1, on the bundled sample. Rows:
cyclediff torch in lockstep (one step's reference maps held), cyclediff torch store-all (every step's maps, as
diffusers), cyclediff's inversion on onnxruntime (the edit needs torch), and diffusers. Columns: seconds of the
inversion and of the edit (load excluded; no warm-up, same for every row), the process's peak RSS, and the most
reference-map bytes held at once. The diffusers row reuses the same inversion code path (its own invert).
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

CAPTION = "a photograph of a house on a hill"
SOURCE = ["a house on a hill", "a photo of a house", "a small house"]
TARGET = ["a castle on a hill", "a photo of a castle", "a large castle"]
IMPLS = ("lockstep", "store-all", "onnxruntime-invert", "diffusers")


def one(impl: str, folder: Path, size: int, steps: int) -> dict:
    """Load `impl`, invert and edit once; return times and peaks (this process runs nothing else)."""
    image = edit_latency.sample_image(size)
    invert, edit, maps = _diffusers(folder, image, steps) if impl == "diffusers" else _ours(impl, folder, image, steps)
    t0 = time.perf_counter()
    code = invert()
    t1 = time.perf_counter()
    if edit is not None:
        edit(code)
    t2 = time.perf_counter()
    return {"impl": impl, "size": size, "steps": steps, "invert_s": t1 - t0,
            "edit_s": (t2 - t1) if edit is not None else None, "map_bytes": maps(),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _ours(impl: str, folder: Path, image, steps: int):
    import cyclediff

    backend = "onnxruntime" if impl == "onnxruntime-invert" else "torch"
    engine = cyclediff.Engine.load(folder, backend=backend, progress=False)
    direction = engine.edit_direction(SOURCE, TARGET)

    def invert():
        return engine.invert(CAPTION, image, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                             output_type=None)

    def edit(code):
        engine.pix2pix_zero(prompt=CAPTION, source_embeds=direction.source_embeds, latents=code,
                            target_embeds=direction.target_embeds, num_inference_steps=steps, trajectory=impl)

    def maps():
        return engine.pix2pix.last_editor.peak_map_bytes if engine.pix2pix.last_editor else None

    return invert, (None if backend == "onnxruntime" else edit), maps


def _diffusers(folder: Path, image, steps: int):
    from diffusers import DDIMInverseScheduler, StableDiffusionPix2PixZeroPipeline

    pipe = StableDiffusionPix2PixZeroPipeline.from_pretrained(
        edit_latency.checkpoint_path(folder), safety_checker=None, requires_safety_checker=False,
        feature_extractor=None, caption_generator=None, caption_processor=None, inverse_scheduler=None)
    pipe.inverse_scheduler = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    held = {}

    def invert():
        return pipe.invert(CAPTION, image=image, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(0)).latents

    def edit(latents):
        src, tgt = pipe.get_embeds(SOURCE), pipe.get_embeds(TARGET)
        pipe(prompt=CAPTION, source_embeds=src, target_embeds=tgt, latents=latents, num_inference_steps=steps,
             generator=torch.Generator().manual_seed(0))

    def maps():  # what the reference pass stored: every step's attn2 maps (emptied by the edit pass)
        return held.get("bytes")

    _count_stored_maps(pipe, held)
    return invert, edit, maps


def _count_stored_maps(pipe, held: dict) -> None:
    """Wrap the UNet call so the first edit-pass step sees how many map bytes the processors hold."""
    unet_forward = pipe.unet.forward

    def forward(*a, **kw):
        kwargs = kw.get("cross_attention_kwargs") or {}
        if "loss" in kwargs and "bytes" not in held:
            held["bytes"] = sum(t.numel() * t.element_size() for p in pipe.unet.attn_processors.values()
                                for t in getattr(p, "reference_cross_attn_map", {}).values())
        return unet_forward(*a, **kw)

    pipe.unet.forward = forward


def child(args, impl: str, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--one", impl, "--engine", str(folder), "--size", str(args.size),
           "--steps", str(args.steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # a crash or OOM kill is a row
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return {"impl": impl, "error": f"exit {done.returncode}: {tail[:160]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| implementation | invert (s) | edit (s) | peak RSS (GB) | reference maps held (MB) |",
             "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['impl']} | {r['error']} | | | |")
            continue
        edit = f"{r['edit_s']:.1f}" if r["edit_s"] is not None else "- (needs torch)"
        maps = f"{r['map_bytes'] / 1e6:.1f}" if r["map_bytes"] is not None else "-"
        lines.append(f"| {r['impl']} | {r['invert_s']:.1f} | {edit} | {r['peak_rss'] / 1e9:.2f} | {maps} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    edit_latency.add_checkpoint_args(p)
    p.add_argument("--size", type=int, help="image side in pixels (default: the checkpoint's native size)")
    p.add_argument("--steps", type=int, default=10, help="num_inference_steps of the inversion and the edit")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {','.join(IMPLS)}")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one implementation in this process
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.engine), args.size, args.steps)))
        return
    folder = edit_latency.engine_dir(argparse.Namespace(**vars(args), backends="torch,onnxruntime"))
    if args.size is None:
        args.size = json.loads((folder / "manifest.json").read_text())["sample_size"]
    rows = []
    for impl in [i for i in args.impls.split(",") if i]:
        rows.append(child(args, impl, folder))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"Pix2Pix-Zero: one inversion + one edit, {args.steps} steps, {args.size}², guidance 7.5, "
          f"cross-attention guidance 0.1, CPU, each in a fresh process ({folder})")
    print(table(rows))


if __name__ == "__main__":
    main()
