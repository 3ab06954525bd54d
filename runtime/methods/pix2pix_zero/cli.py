"""`cyclediff-run --method pix2pix-zero`: invert an image (or load a saved inversion), then edit it along a
direction made from two sentence banks. The flags are added to cyclediff-run's parser (runtime/cli.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

METHODS = ("cycle", "pix2pix-zero")
# The other method's flags: refused here rather than silently ignored.
_CYCLE_ONLY = ("strength", "source_guidance_scale", "preset", "prompt", "jobs")


def add_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--method pix2pix-zero (see README 'Pix2Pix-Zero')")
    g.add_argument("--caption", metavar="TEXT", help="text describing the input image (default: --source-prompt, "
                                                     "or a caption from --caption-model)")
    g.add_argument("--caption-model", metavar="DIR", help="local BLIP captioning model folder, for the caption")
    g.add_argument("--source-word", metavar="W", help="edit from W: built-in sentences around W")
    g.add_argument("--target-word", metavar="W", help="edit to W: built-in sentences around W")
    g.add_argument("--source-sentences", metavar="FILE", help="sentences about the source, one per line")
    g.add_argument("--target-sentences", metavar="FILE", help="sentences about the target, one per line")
    g.add_argument("--cross-attention-guidance", type=float, default=0.1, metavar="F",
                   help="cross_attention_guidance_amount (default 0.1; 0 = no guidance, any backend)")
    g.add_argument("--negative-prompt", metavar="TEXT", help="negative prompt of the edit (default empty)")


def run(args: argparse.Namespace) -> None:
    from cyclediff.runtime import cli

    _check_flags(args)
    outputs = cli.Outputs((Path(args.out),), _grid(args), Path(args.save_code) if args.save_code else None)

    def read() -> tuple:
        banks = _sentences(args)
        return banks, cli.read_image(args.image) if args.image else None, _load_code(args.code) if args.code else None

    def work(engine, inputs: tuple, files) -> None:
        banks, image, code = inputs
        if args.image == cli.SAMPLE:
            image = cli.fit_sample(image, engine.manifest.sample_size)
        edit, code = _edit(engine, image, code, banks, args)
        _stage(files, outputs, image, edit, code, args)

    cli.staged_run(args, outputs.every, read, work)


def _check_flags(args: argparse.Namespace) -> None:
    from cyclediff.runtime.cli import CliError, check_format

    given = [f"--{n.replace('_', '-')}" for n in _CYCLE_ONLY if getattr(args, n, None)]
    if given:
        raise CliError(f"{', '.join(given)}: CycleDiffusion options; --method pix2pix-zero edits along "
                       "--source-word/--target-word (or --source-sentences/--target-sentences) instead")
    if args.out is None:
        raise CliError("--out is required")
    check_format(Path(args.out), "--out")
    if args.code is None and args.image is None:
        raise CliError("--image is required (a file, or 'sample'), unless --code loads a saved inversion")
    if args.code is None and not (args.caption or args.source_prompt or args.caption_model):
        raise CliError("--caption is required: a text describing the input image (or --caption-model DIR)")
    settings(args)  # the scalar flags, by the request rules, before any work
    if args.backend == "auto":
        args.backend = "torch"  # the guided step needs input gradients: only the torch backend has them
    elif args.backend != "torch" and args.cross_attention_guidance > 0 and not _reference_off_torch(args):
        raise CliError(f"--backend {args.backend} runs forward only, but the cross-attention guidance needs the "
                       "UNet's input gradient; use --backend torch (the default for this method), or "
                       "--cross-attention-guidance 0, or (--backend onnxruntime or openvino) re-export with "
                       "`cyclediff-export --attention-maps` to run all but the gradient step on that backend")


def _reference_off_torch(args: argparse.Namespace) -> bool:
    """A forward-only backend (onnxruntime, openvino) on an export with unet_attn: it runs the reference pass,
    torch only the gradient."""
    from cyclediff.export.attention_maps import UNET_ATTN
    from cyclediff.export.manifest import Manifest, ManifestError

    try:
        return args.backend in ("onnxruntime", "openvino") and \
            UNET_ATTN in Manifest.load(args.engine, verify_files=False).models
    except ManifestError:
        return False  # the engine's load says what is wrong with the folder


def _sentences(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    from cyclediff.runtime.cli import CliError
    from cyclediff.runtime.methods.pix2pix_zero import directions

    banks = []
    for side in ("source", "target"):
        word, file = getattr(args, f"{side}_word"), getattr(args, f"{side}_sentences")
        if (word is None) == (file is None):
            raise CliError(f"give exactly one of --{side}-word and --{side}-sentences")
        banks.append(directions.templated(word) if word is not None else directions.read_sentences(file))
    return banks[0], banks[1]


def _load_code(path: str):
    from cyclediff.runtime.cli import CliError
    from cyclediff.runtime.methods.pix2pix_zero.code import InversionCode

    if not Path(path).is_file():
        raise CliError(f"--code {path}: no such file")
    return InversionCode.load(path)


def settings(args: argparse.Namespace):
    """The edit's scalar settings as a Pix2PixZeroRequest (no image or direction yet), checked by the request
    rules; a bad one is a CliError naming the flag."""
    from cyclediff.runtime import cli
    from cyclediff.runtime.core.checks import InvalidArgument
    from cyclediff.runtime.methods.pix2pix_zero.requests import Pix2PixZeroRequest

    cli.check_seed_flag(args.seed)
    try:
        return Pix2PixZeroRequest(
            num_inference_steps=args.steps if args.steps is not None else 50,
            guidance_scale=args.guidance_scale if args.guidance_scale is not None else 7.5,
            negative_prompt=args.negative_prompt, eta=args.eta if args.eta is not None else 0.0,
            amount=args.cross_attention_guidance, clip_skip=args.clip_skip)
    except InvalidArgument as err:
        raise cli.CliError(cli.message(err)) from err


def _edit(engine, image, code, banks, args: argparse.Namespace):
    """(edited PIL image, the inversion used)."""
    import dataclasses

    from cyclediff.runtime.methods.pix2pix_zero.requests import InvertRequest

    request = settings(args)
    steps = request.num_inference_steps
    if code is None:
        code = engine.run(InvertRequest(_caption(image, args), image, steps, generator=_generator(args),
                                        output_type=None))
    elif args.steps is not None and args.steps != code.num_inference_steps and not args.quiet:
        print(f"cyclediff-run: note: editing with {steps} steps an inversion made with {code.num_inference_steps}",
              file=sys.stderr)
    direction = engine.edit_direction(*banks)
    out = engine.run(dataclasses.replace(request, prompt=code.prompt, source_embeds=direction.source_embeds,
                                         target_embeds=direction.target_embeds, latents=code,
                                         generator=_generator(args)))
    return out.images[0], code


def _caption(image, args: argparse.Namespace) -> str:
    if args.caption or args.source_prompt:
        return args.caption or args.source_prompt
    from cyclediff.runtime.methods.pix2pix_zero import captioner

    text = captioner.caption(*captioner.load(args.caption_model), image)
    if not text:
        raise captioner.CaptionError(f"--caption-model {args.caption_model} gave an empty caption; pass --caption")
    if not args.quiet:
        print(f"cyclediff-run: caption: {text}", file=sys.stderr)
    return text


def _generator(args: argparse.Namespace):
    import torch

    return torch.Generator().manual_seed(args.seed) if args.seed is not None else None


def _grid(args: argparse.Namespace):
    out = Path(args.out)
    return out.with_name(f"{out.stem}_grid.png") if args.grid else None


def _stage(files, outputs, image, edit, code, args: argparse.Namespace) -> None:
    """Stage the image, the sheet and the inversion (staged_run renames them all into place together)."""
    from cyclediff.runtime import cli
    from cyclediff.runtime.grid import contact_sheet

    cli.stage_images(files, outputs.images, [edit])
    if outputs.grid is not None:
        tiles = [image, edit] if image is not None else [edit]
        words = f"{args.source_word or 'source'} -> {args.target_word or 'target'}"
        captions = [f"{code.prompt} (input)", words] if image is not None else [words]
        sheet = cli.encode_image(contact_sheet(tiles, captions), "PNG")
        files.stage(outputs.grid, lambda tmp: cli.write_bytes(tmp, sheet))
    if outputs.code is not None:
        files.stage(outputs.code, code.save)
