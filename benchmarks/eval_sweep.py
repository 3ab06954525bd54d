"""Sweep throughput: cyclediff-eval's candidates/s against diffusers' CycleDiffusionPipeline called once per
candidate, on the same grid, checkpoint and images, in one process and one run.

    python benchmarks/eval_sweep.py                     # CPU, built-in `tiny`: 2 inputs x 36 candidates (~1 min)
    python benchmarks/eval_sweep.py --engine exports/x --guidance-scale 2,4 --trials 2 --steps 20

Rows: diffusers per candidate (edit only), cyclediff's Engine.edit per candidate (the engine alone), the sweep's
generation (one encode per (input, strength, eta) for all trials, every guidance scale decoded from it by
concurrent decodes that the engine batches), and the whole cyclediff-eval sweep (generation + CLIP, metrics,
files, contact sheets, plots). Each implementation does one untimed candidate first (load, first-call costs).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import types
from pathlib import Path

# As importing cyclediff does, before torch starts its threads: spinning OpenMP threads made the diffusers row
# 10x slower on a shared CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_latency import checkpoint_path, load_diffusers, sample_image  # a sibling script

PROMPTS = [("a photo of a house on a hill", "a photo of a castle on a hill"),
           ("a photo of a house", "a painting of a house in winter"),
           ("a photo of a house on a hill", "a photo of a red house on a hill"),
           ("a photo of a house", "a photo of a tree house")]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", type=Path, help="export folder (default: export the built-in tiny once, cached)")
    p.add_argument("--inputs", type=int, default=2, help=f"triplets (the sample image, 1..{len(PROMPTS)} prompts)")
    p.add_argument("--guidance-scale", default="1,2,3")
    p.add_argument("--strength", default="0.6,0.8")
    p.add_argument("--eta", default="0.1,1")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return p.parse_args(argv)


def engine_folder(args) -> Path:
    if args.engine:
        return args.engine
    from cyclediff.export.pipeline import export
    from cyclediff.export.tiny import cache_root

    out = cache_root() / "bench" / "export-tiny"
    export("tiny", out, quiet=True)
    return out


def candidates(grid, inputs):
    """(source, target, strength, eta, guidance_scale, seed) for every candidate, in the sweep's grid."""
    return [(src, tgt, s, e, g, seed) for src, tgt in inputs for s in grid.strengths for e in grid.etas
            for g in grid.guidance_scales for seed in grid.seeds]


def time_per_candidate(edit, work) -> float:
    edit(*work[0])  # untimed: first-call costs
    start = time.perf_counter()
    for item in work:
        edit(*item)
    return time.perf_counter() - start


def diffusers_edit(pipe, image, steps):
    def edit(src, tgt, strength, eta, guidance, seed):
        pipe(prompt=tgt, source_prompt=src, image=image, strength=strength, num_inference_steps=steps,
             guidance_scale=guidance, source_guidance_scale=1, eta=eta,
             generator=torch.Generator().manual_seed(seed), output_type="np")
    return edit


def engine_edit(engine, image, steps):
    def edit(src, tgt, strength, eta, guidance, seed):
        engine.edit(tgt, src, image, strength=strength, num_inference_steps=steps, guidance_scale=guidance,
                    eta=eta, generator=torch.Generator().manual_seed(seed), output_type="np")
    return edit


def time_generation(engine, image, grid, inputs) -> float:
    from cyclediff.eval.methods import CycleMethod

    method = CycleMethod()
    units = [(src, tgt, enc) for src, tgt in inputs for enc in method.encodings(grid)]
    method.run(engine, image, *units[0][:2], units[0][2], method.decodings(grid)[:1], grid)  # untimed warm-up
    start = time.perf_counter()
    for src, tgt, enc in units:
        method.run(engine, image, src, tgt, enc, method.decodings(grid), grid)
    return time.perf_counter() - start


def time_full_sweep(folder: Path, grid, inputs, backend: str, scratch: Path) -> float:
    from cyclediff.eval.clip_model import resolve_clip
    from cyclediff.eval.sweep import SweepConfig, run_sweep

    resolve_clip("tiny")  # built once, outside the timing
    (scratch / "triplets.csv").write_text("image,source_prompt,target_prompt\n" +
                                          "".join(f"sample,{s},{t}\n" for s, t in inputs))
    cfg = SweepConfig(engine=folder, triplets=scratch / "triplets.csv", out=scratch / "run", grid=grid, clip="tiny",
                      backend=backend, quiet=True)
    start = time.perf_counter()
    run_sweep(cfg)
    return time.perf_counter() - start


def main(argv=None) -> int:
    import cyclediff
    from cyclediff.eval.grid import SweepGrid, parse_values
    from cyclediff.export.manifest import Manifest

    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = SweepGrid(guidance_scales=parse_values("--guidance-scale", args.guidance_scale),
                     strengths=parse_values("--strength", args.strength), etas=parse_values("--eta", args.eta),
                     trials=args.trials, steps=args.steps)
    folder = engine_folder(args)
    image = sample_image(Manifest.load(folder, verify_files=False).sample_size)
    inputs = PROMPTS[: args.inputs]
    work = candidates(grid, inputs)
    n = len(work)
    print(f"engine {folder}  image {image.size[0]}px  {len(inputs)} inputs x {grid.size()} candidates = {n}  "
          f"steps {grid.steps}  g {args.guidance_scale}  s {args.strength}  eta {args.eta}  trials {grid.trials}  "
          f"torch threads {torch.get_num_threads()}", flush=True)
    pipe = load_diffusers(checkpoint_path(folder), types.SimpleNamespace(device="cpu", dtype="fp32"))
    rows = [("diffusers CycleDiffusionPipeline, one call per candidate",
             time_per_candidate(diffusers_edit(pipe, image, grid.steps), work))]
    del pipe
    engine = cyclediff.Engine.load(folder, backend=args.backend, progress=False)
    rows.append((f"cyclediff Engine.edit ({engine.backend}), one call per candidate",
                 time_per_candidate(engine_edit(engine, image, grid.steps), work)))
    rows.append(("cyclediff-eval generation: encode once, batched decodes",
                 time_generation(engine, image, grid, inputs)))
    with tempfile.TemporaryDirectory() as scratch:
        rows.append(("cyclediff-eval whole sweep (+ CLIP, metrics, files, sheets, plots)",
                     time_full_sweep(folder, grid, inputs, args.backend, Path(scratch))))
    print_table(rows, n)
    return 0


def print_table(rows, n: int) -> None:
    base = n / rows[0][1]
    width = max(len(name) for name, _ in rows)
    print(f"\n| {'impl'.ljust(width)} | candidates | seconds | candidates/s | vs diffusers |")
    print(f"|{'-' * (width + 2)}|---:|---:|---:|---:|")
    for name, seconds in rows:
        print(f"| {name.ljust(width)} | {n} | {seconds:.2f} | {n / seconds:.1f} | {n / seconds / base:.1f}x |")


if __name__ == "__main__":
    sys.exit(main())
