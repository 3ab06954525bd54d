"""`cyclediff-guide`: steer an exported engine with a CLIP energy by Langevin dynamics on its latent code."""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from cyclediff.runtime import cli as run_cli
from cyclediff.runtime.outputs import OutputSet

PROG = "cyclediff-guide"

EXAMPLE = """\
example (tiny checkpoint, CPU, about a minute; offline: --clip tiny is a built-in random CLIP, as in
cyclediff-eval; the paper's needs `hf download openai/clip-vit-base-patch32`):
  cyclediff-guide --engine exports/tiny --prompt "a photo of a face" --clip-text "a person with eyeglasses" \\
      --clip tiny --steps 20 --guide-steps 3 --seed 0 --strip out/strip.png --out out/guided.png

  --start-image IMG (or 'sample') --source-prompt S starts from the image's encoding (guided editing).
  Every output location is checked before any compute; files are written only after success, atomically.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Latent-space EBM guidance (Wu & De la Torre, Section 4.3): Langevin "
                                            "dynamics on the Gaussian latent code z of an exported engine, "
                                            "E(z) = clip_weight * E_clip(G(z)) + |z|^2 / 2.")
    p.add_argument("--engine", required=True, metavar="DIR", help="export directory (from cyclediff-export)")
    p.add_argument("--prompt", required=True, metavar="T", help="the diffusion model's text prompt")
    p.add_argument("--out", required=True, metavar="OUT", help="output image (.png, .jpg, .jpeg, .webp)")
    _add_energy_flags(p)
    _add_langevin_flags(p)
    start = p.add_argument_group("start from an image (guided editing) instead of z ~ N(0, I)")
    start.add_argument("--start-image", metavar="IN", help="image file, or 'sample' for the bundled picture")
    start.add_argument("--source-prompt", metavar="S", help="text describing --start-image (required with it)")
    start.add_argument("--strength", type=float, default=0.8, metavar="F", help="encode strength (default 0.8)")
    p.add_argument("--strip", metavar="PATH", help="also write a strip of G(z) every --strip-every steps (.png)")
    p.add_argument("--strip-every", type=int, default=10, metavar="N", help="strip interval (default 10)")
    p.add_argument("--save-code", metavar="PATH", help="also save the final LatentCode (decode it with cyclediff-run)")
    run_cli._add_engine_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars, print nothing on success")
    p.add_argument("--verbose", action="store_true", help="also show the libraries' own warnings")
    return p


def _add_energy_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CLIP energy (classifier and identity energies need your own networks: Python API)")
    g.add_argument("--clip-text", metavar="T", help="text the image should match; without it z samples the prior")
    g.add_argument("--clip-weight", type=float, default=500.0, metavar="L", help="lambda_CLIP (default 500)")
    g.add_argument("--clip", "--clip-model", dest="clip_model", default="openai/clip-vit-base-patch32",
                   metavar="DIR|ID|tiny", help="CLIP folder, hub id in the local HF cache, or 'tiny' (a random "
                                               "built-in one, as cyclediff-eval's; --clip-model is the old "
                                               "spelling) (default openai/clip-vit-base-patch32)")
    g.add_argument("--clip-augment", type=int, default=8, metavar="N",
                   help="augmented copies per step (the paper uses 50; each costs one CLIP pass) (default 8)")


def _add_langevin_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Langevin sampler and decode")
    g.add_argument("--steps", type=int, default=200, metavar="N", help="Langevin steps (default 200)")
    g.add_argument("--step-size", type=float, default=0.05, metavar="S", help="Langevin step size (default 0.05)")
    g.add_argument("--guide-steps", type=int, default=10, metavar="K",
                   help="DDIM steps of the sampler inside the loop (default 10); with --eta > 0 it must equal "
                        "--decode-steps")
    g.add_argument("--decode-steps", type=int, default=50, metavar="N", help="final decode's DDIM steps (default 50)")
    g.add_argument("--guidance-scale", type=float, default=7.5, metavar="F", help="classifier-free guidance (7.5)")
    g.add_argument("--eta", type=float, default=0.0, metavar="F", help="DDIM eta of the code (default 0: z = x_T)")
    g.add_argument("--no-noise", action="store_true", help="gradient descent on E instead of Langevin sampling")
    g.add_argument("--keep-best", metavar="NAME", help="return the z with the lowest value of this energy (clip, total)")
    g.add_argument("--seed", type=int, metavar="N", help="seed of a torch.Generator (default: random)")
    g.add_argument("--height", type=int, metavar="PX", help="image height (default: the checkpoint's native size)")
    g.add_argument("--width", type=int, metavar="PX", help="image width (default: the checkpoint's native size)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except run_cli.user_errors() as err:
        if args.verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {run_cli.message(err)}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> None:
    config = _config(args)
    paths = _outputs(args)

    def read() -> tuple:
        image = run_cli.read_image(args.start_image, "--start-image") if args.start_image else None
        return image, _load_clip(args)

    def work(engine, inputs: tuple, files: OutputSet) -> None:
        result, strip = _guide(engine, args, config, *inputs)
        _stage(files, paths, result, strip)

    run_cli.staged_run(args, [p for p in paths.values() if p is not None], read, work)


def _config(args: argparse.Namespace):
    from cyclediff.runtime.methods.guidance.config import GuidanceError, LangevinConfig

    flags = {"step_size": "--step-size", "n_steps": "--steps", "guide_steps": "--guide-steps",
             "noise_scale": "--no-noise", "keep_best": "--keep-best"}
    try:
        config = LangevinConfig(step_size=args.step_size, n_steps=args.steps, guide_steps=args.guide_steps,
                                noise_scale=0.0 if args.no_noise else 1.0, keep_best=args.keep_best)
    except GuidanceError as err:
        field = getattr(err, "field", None) or "keep_best"  # the one setting checked without the number rules
        raise run_cli.CliError(f"{flags.get(field, field)}: {err}") from err
    if args.clip_weight < 0 or args.clip_augment < 1 or args.strip_every < 1 or args.decode_steps < 1:
        raise run_cli.CliError("--clip-weight must be >= 0, and --clip-augment, --strip-every and --decode-steps "
                               ">= 1")
    run_cli.check_seed_flag(args.seed)
    if args.start_image and not args.source_prompt:
        raise run_cli.CliError("--start-image needs --source-prompt (the text describing that image)")
    return config


def _outputs(args: argparse.Namespace) -> dict[str, Path | None]:
    out = Path(args.out)
    run_cli.check_format(out, "--out")
    strip = Path(args.strip) if args.strip else None
    if strip is not None:
        run_cli.check_format(strip, "--strip")
    return {"out": out, "strip": strip, "code": Path(args.save_code) if args.save_code else None}


def _load_clip(args: argparse.Namespace):
    if not args.clip_text:
        return None
    from cyclediff.runtime.methods.guidance.clip_loader import load_clip

    if args.quiet:  # transformers shows a weight-loading bar of its own
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return load_clip(args.clip_model, args.device)


def _guide(engine, args: argparse.Namespace, config, image, clip):
    import torch

    from cyclediff.runtime.methods.guidance.energies import ClipEnergy
    from cyclediff.runtime.methods.guidance.requests import GuideRequest

    energies = [ClipEnergy(clip, args.clip_text, args.clip_weight, args.clip_augment)] if clip is not None else []
    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    start = None
    if image is not None:
        if args.start_image == run_cli.SAMPLE:
            image = run_cli.fit_sample(image, engine.manifest.sample_size)
        start = engine.encode(image, args.source_prompt, args.strength, args.decode_steps, eta=args.eta,
                              generator=generator)
    strip: list = []
    request = GuideRequest(args.prompt, energies, start, config, args.height, args.width, args.decode_steps,
                           args.guidance_scale, args.eta, generator, callback=_strip_callback(strip, args))
    return engine.run(request), strip


def _strip_callback(strip: list, args: argparse.Namespace):
    if args.strip is None:
        return None
    from cyclediff.runtime.core import images

    def collect(step: int, record: dict, pixels) -> None:
        if pixels is not None and step % args.strip_every == 0:
            label = f"{step}: E={record['total']:.4g}"
            strip.append((images.postprocess(pixels[:1].float().cpu(), "pil")[0], label))

    return collect


def _stage(files: OutputSet, paths: dict, result, strip: list) -> None:
    """Stage the image, the strip and the code (staged_run renames them all into place together)."""
    from cyclediff.runtime.grid import contact_sheet

    data = run_cli.encode_image(result.images[0], run_cli.FORMATS[paths["out"].suffix.lower()])
    files.stage(paths["out"], lambda tmp: run_cli.write_bytes(tmp, data))
    if paths["strip"] is not None:
        tiles = [t for t, _ in strip] + [result.images[0]]
        sheet = run_cli.encode_image(contact_sheet(tiles, [c for _, c in strip] + ["final"]),
                                     run_cli.FORMATS[paths["strip"].suffix.lower()])
        files.stage(paths["strip"], lambda tmp: run_cli.write_bytes(tmp, sheet))
    if paths["code"] is not None:
        files.stage(paths["code"], result.code.save)


if __name__ == "__main__":
    sys.exit(main())
