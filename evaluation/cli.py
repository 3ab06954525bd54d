"""`cyclediff-eval`: sweep an editing method's settings over (image, source, target) triplets, pick the best
candidate per input, and report the paper's metrics (CLIP score, directional CLIP, PSNR, SSIM, L2)."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from cyclediff.eval.grid import PRESETS as GRID_PRESETS
from cyclediff.runtime.core.config import BACKENDS, DTYPES

EXAMPLE = """example (offline, built-in random checkpoints):
  cyclediff-export --ckpt tiny --out exports/tiny
  cyclediff-eval --engine exports/tiny --clip tiny --triplets triplets.csv --out runs/demo \\
      --guidance-scale 1,2,3 --strength 0.6,0.8 --eta 0.1,1 --trials 3 --steps 10

the paper's own test set and grid (ChenWu98/cycle-diffusion's data/translate-text.json, paths from its root):
  cyclediff-eval --engine exports/sd14 --triplets cycle-diffusion/data/translate-text.json --preset paper-translate \
      --out runs/paper

triplets: CSV with a header row image,source_prompt,target_prompt (optional id), or JSONL objects with those
keys; image paths relative to the file (or 'sample', the bundled image); or the paper's JSON list of
encode_text, decode_text, img_path, paths relative to its repository root (the file's parent folder; or
--image-root). Images of any size and mode are converted to RGB, center-cropped to a square and resized
(bilinear), as the paper's preprocessing. A killed sweep restarted with the same arguments resumes where it
stopped."""


def build_parser() -> argparse.ArgumentParser:
    from cyclediff.eval.metric_names import METRICS

    p = argparse.ArgumentParser(prog="cyclediff-eval", description=__doc__, epilog=EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", required=True, type=Path, help="export folder (cyclediff-export --out)")
    p.add_argument("--triplets", required=True, type=Path,
                   help="CSV or JSONL of image, source_prompt, target_prompt; or the paper's JSON list of "
                        "encode_text, decode_text, img_path (data/translate-text.json)")
    p.add_argument("--image-root", type=Path, help="where relative image paths start (default: the triplets "
                                                   "file's folder; for the paper's JSON also its parent)")
    p.add_argument("--out", required=True, type=Path, help="run folder (created; an existing run is resumed)")
    p.add_argument("--clip", default="openai/clip-vit-base-patch32",
                   help="CLIP folder, hub id in the local HF cache, or 'tiny' (default: the paper's ViT-B/32)")
    p.add_argument("--method", default="cycle", help="editing method (default cycle: CycleDiffusion)")
    grid = p.add_argument_group("grid (comma-separated values; every combination is a candidate)")
    grid.add_argument("--preset", choices=sorted(GRID_PRESETS),
                      help="a named grid; flags given with it replace its axes (paper-translate: the paper's "
                           "translation sweep, 6 guidance x 6 strengths x 15 trials, 100 steps, eta 0.1)")
    grid.add_argument("--guidance-scale", metavar="F,..", help="target guidance (default 2)")
    grid.add_argument("--strength", metavar="F,..", help="default 0.8")
    grid.add_argument("--eta", metavar="F,..", help="default 0.1")
    grid.add_argument("--option", action="append", default=[], metavar="NAME=F,..",
                      help="a method option axis, e.g. source_guidance_scale=1,2 (cycle); repeatable")
    grid.add_argument("--decoder-engine", action="append", default=[], metavar="DIR",
                      help="an axis of exports that decode each code (translation between two models: a fine-tune "
                           "or LoRA of --engine's checkpoint; --engine itself for today's edit); repeatable. "
                           "Candidates are named by the folder's name")
    grid.add_argument("--trials", type=int, help="seeds per setting: seed, seed+1, ... (default 1)")
    grid.add_argument("--steps", type=int, help="num_inference_steps (default 50)")
    grid.add_argument("--seed", type=int, help="first trial's seed (default 0)")
    p.add_argument("--select", default="dclip", help=f"best-of-N metric: {', '.join(METRICS)} (default dclip)")
    p.add_argument("--sheet-size", type=int, default=4, help="candidates per contact sheet (default 4)")
    p.add_argument("--keep-images", default="sheet", choices=("sheet", "all"),
                   help="candidate PNGs to keep: those on the sheets (default) or all")
    p.add_argument("--size", type=int, help="evaluation side in px (default: the checkpoint's native size)")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="runtime backend (default auto)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES, help="model precision (default fp32; bf16 on the CPU "
                                                                   "runs on openvino or torch)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-batch", type=int, default=16, help="largest merged UNet batch (default 16)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the summary table still prints)")
    p.add_argument("--verbose", action="store_true", help="show the libraries' warnings too")
    return p


def config_from_args(args):
    from cyclediff.eval.sweep import SweepConfig, decoder_names

    grid = dataclasses.replace(_grid(args), decoders=decoder_names(args.decoder_engine))
    return SweepConfig(engine=args.engine, triplets=args.triplets, out=args.out, grid=grid, clip=args.clip,
                       select=args.select, sheet_size=args.sheet_size, keep_images=args.keep_images,
                       backend=args.backend, dtype=args.dtype, device=args.device, size=args.size,
                       max_batch=args.max_batch, quiet=args.quiet,
                       decoder_engines=tuple(Path(f) for f in args.decoder_engine), image_root=args.image_root)


def _grid(args):
    """--preset's grid (or the defaults) with every grid flag given on top."""
    from cyclediff.eval.grid import SweepGrid, parse_option, parse_values

    base = GRID_PRESETS[args.preset] if args.preset else SweepGrid()
    given: dict = {"method": args.method}
    for flag, dest, field in (("--guidance-scale", "guidance_scale", "guidance_scales"),
                              ("--strength", "strength", "strengths"), ("--eta", "eta", "etas")):
        if getattr(args, dest) is not None:
            given[field] = parse_values(flag, getattr(args, dest))
    given |= {k: getattr(args, k) for k in ("trials", "steps", "seed") if getattr(args, k) is not None}
    options = dict(base.options) | dict(parse_option(o) for o in args.option)
    return dataclasses.replace(base, **given, options=tuple(options.items()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from cyclediff.runtime.verbosity import configure

    configure("cyclediff-eval", args.verbose)
    try:
        from cyclediff.eval.sweep import run_sweep

        run_sweep(config_from_args(args))
    except (ValueError, OSError) as err:  # every input error (grid, triplets, run folder, CLIP) is a ValueError
        print(f"cyclediff-eval: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cyclediff-eval: interrupted; finished candidates are kept: run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
