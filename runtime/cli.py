"""`cyclediff-run`: edit an image with an exported engine; every input is checked before any file is written."""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import PIL.features
import PIL.Image
import PIL.ImageOps

from cyclediff.runtime import verbosity
from cyclediff.runtime.core.checks import InvalidArgument, check_edit_steps, check_optional_int, check_seed
from cyclediff.runtime.core.config import BACKENDS, DTYPES, PRESETS, EditParams
from cyclediff.runtime.methods.pix2pix_zero import cli as pix2pix_cli
from cyclediff.runtime.outputs import OutputSet

PROG = "cyclediff-run"
SAMPLE = "sample"
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
# argparse dest -> EditParams field; these flags default to None so that a --preset fills only what is unset.
PARAM_FLAGS = {"strength": "strength", "steps": "num_inference_steps", "guidance_scale": "guidance_scale",
                "source_guidance_scale": "source_guidance_scale", "eta": "eta"}
# Request fields whose flag is not "--" + the field with dashes (amount: Pix2PixZeroRequest's).
FIELD_FLAGS = {"num_inference_steps": "--steps", "amount": "--cross-attention-guidance",
               "cross_attention_guidance_amount": "--cross-attention-guidance"}

EXAMPLE = """\
example:
  cyclediff-export --ckpt sd-v1-4 --out exports/sd14
  cyclediff-run --engine exports/sd14 --image sample --source-prompt "a house on a hill" \\
      --prompt "a castle on a hill" --prompt "a barn on a hill" --seed 0 --grid --out edits/house.png
  # -> edits/house_0.png, edits/house_1.png and the contact sheet edits/house_grid.png

output naming:
  one --prompt writes exactly OUT; N prompts write OUT's stem + "_0" ... "_{N-1}" + OUT's suffix, all
  decoded from ONE shared encoding of the image. --grid adds OUT's stem + "_grid.png". The format follows
  OUT's suffix (.png, .jpg/.jpeg, .webp). Every output location is checked before any compute; files are
  written only after every edit succeeded, each atomically, and a failure removes whatever the call wrote.

jobs file (--jobs FILE.jsonl): many edits in one process, on one engine, --concurrency at a time.
  One JSON object per line (blank lines are skipped); relative paths are relative to the jobs file's folder:
    {"image": "house.png", "source_prompt": "a house on a hill", "prompt": "a castle on a hill",
     "out": "edits/castle.png", "settings": {"num_inference_steps": 20, "seed": 0}}
    {"image": "sample", "source_prompt": "a house", "prompt": ["a barn", "a mill"], "out": "edits/farm.png",
     "settings": {"preset": "paper", "strength": 0.7, "guidance_scale": 3, "eta": 0.1, "seed": 1}}
  keys: image (file or 'sample'), source_prompt, prompt (a string, or a list: one shared encoding, outputs
  named as with several --prompt), out; optional settings with diffusers' names: strength,
  num_inference_steps, guidance_scale, source_guidance_scale, eta, seed, clip_skip, preset. Edit flags on
  the command line (--steps, --seed, --preset, ...) are defaults for every line; a line's settings win.
  Every line is checked before the engine loads: a bad line is reported with its number and skipped, the
  others run. Each job's files appear together or not at all. Exit status: 0 if every line succeeded, 1 if
  any line was bad or failed (see the summary table), 2 for a bad command line.
"""


class CliError(ValueError):
    """A bad command line or input file; the message names the flag and the fix."""


@dataclasses.dataclass(frozen=True)
class Outputs:
    images: tuple[Path, ...]
    grid: Path | None
    code: Path | None

    @property
    def every(self) -> list[Path]:
        return [p for p in (*self.images, self.grid, self.code) if p is not None]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Zero-shot text-guided image editing (CycleDiffusion) with an engine "
                                            "made by cyclediff-export. Options are named as in diffusers' "
                                            "CycleDiffusionPipeline.")
    p.add_argument("--engine", required=True, metavar="DIR", help="export directory (from cyclediff-export)")
    p.add_argument("--image", metavar="IN", help=f"input image file, or '{SAMPLE}' for the bundled sample picture "
                                                 "(resized to the engine's native size); with --code only --grid uses "
                                                 "it, as the input tile")
    p.add_argument("--source-prompt", metavar="S", help="text describing the input image (not used with --code)")
    p.add_argument("--prompt", action="append", metavar="T",
                   help="target text; repeat for several edits of one shared encoding")
    p.add_argument("--out", metavar="OUT", help="output image (.png, .jpg, .jpeg, .webp)")
    p.add_argument("--decoder-engine", metavar="DIR",
                   help="decode with this export instead: another checkpoint in --engine's latent space (a "
                        "fine-tune of it, or it with a LoRA fused), i.e. translation between two models. "
                        "--source-prompt is encoded by --engine, every --prompt by this one; --code decodes here")
    _add_edit_flags(p)
    _add_engine_flags(p)
    p.add_argument("--grid", action="store_true", help="also write a before/after contact sheet OUTSTEM_grid.png")
    p.add_argument("--save-code", metavar="PATH",
                   help="also save the image's LatentCode (decode it later with --code)")
    p.add_argument("--code", metavar="PATH", help="decode this saved LatentCode instead of encoding an image")
    p.add_argument("--method", default="cycle", choices=pix2pix_cli.METHODS,
                   help="cycle = CycleDiffusion (default); pix2pix-zero = inversion + edit direction + "
                        "cross-attention guidance")
    pix2pix_cli.add_flags(p)
    jobs = p.add_argument_group("many edits in one process (see 'jobs file' below)")
    jobs.add_argument("--jobs", metavar="FILE.jsonl",
                      help="run every edit of this JSON-lines file on one engine, instead of --image/--prompt/--out")
    jobs.add_argument("--concurrency", type=int, default=8, metavar="N",
                      help="--jobs: edits in flight at once on the shared engine (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, print nothing on success")
    p.add_argument("--verbose", action="store_true",
                   help="also show the libraries' own warnings (onnxruntime, transformers, diffusers)")
    return p


def _add_edit_flags(p: argparse.ArgumentParser) -> None:
    d = PRESETS["default"]
    p.add_argument("--preset", choices=sorted(PRESETS), help="named edit settings; explicit flags override them")
    p.add_argument("--strength", type=float, metavar="F",
                   help=f"how far the image is noised, in (0, 1] (default {d.strength})")
    p.add_argument("--steps", type=int, metavar="N", help=f"num_inference_steps (default {d.num_inference_steps})")
    p.add_argument("--guidance-scale", type=float, metavar="F",
                   help=f"target classifier-free guidance (default {d.guidance_scale})")
    p.add_argument("--source-guidance-scale", type=float, metavar="F",
                   help=f"source guidance (default {d.source_guidance_scale:g}); unused when --guidance-scale <= 1")
    p.add_argument("--eta", type=float, metavar="F", help=f"DDIM eta, >= 0 (default {d.eta})")
    p.add_argument("--seed", type=int, metavar="N", help="seed of a torch.Generator (default: random)")
    p.add_argument("--clip-skip", type=int, metavar="K",
                   help="use the text encoder's hidden state this many layers from the end")


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="runtime backend (default auto: tensorrt where its plans are, else openvino for bf16 on the "
                        "CPU, else onnxruntime)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=DTYPES,
                   help="model precision (default fp32). bf16: the fast CPU mode (openvino or torch, on a CPU with "
                        "AVX512_BF16 or AMX). fp16 is for CUDA: it runs on the CPU too, slowly (onnxruntime needs "
                        "an export made with --fp16)")
    p.add_argument("--max-batch", type=int, default=16, metavar="N",
                   help="largest UNet batch of the encoder (default 16)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="intra-op CPU threads of the backend (default: from the CPUs this process may use)")
    p.add_argument("--verify", default="fast", choices=("fast", "full"),
                   help="integrity check of the export's files on load: fast = sizes and sampled-block stamps "
                        "(default), full = sha256 of every byte (as `cyclediff-export --verify DIR`)")
    p.add_argument("--max-memory", metavar="SIZE",
                   help="working-memory budget, e.g. 12GB (default: a safe fraction of the available RAM or GPU "
                        "memory); an edit that cannot fit is refused before it starts")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.method == "pix2pix-zero":
            if args.decoder_engine is not None:
                raise CliError("--decoder-engine decodes CycleDiffusion codes; it does not combine with --method "
                               "pix2pix-zero")
            return pix2pix_cli.run(args) or 0
        if args.jobs is not None:
            from cyclediff.runtime import jobs  # imports this module: loaded only when asked for

            return jobs.main(args)
        _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except user_errors() as err:
        if args.verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {message(err)}", file=sys.stderr)
        return 2
    return 0


def user_errors() -> tuple[type[BaseException], ...]:
    """What a user fixes by changing the command: every project error about an input is a ValueError (a bad
    argument, export, image, code, memory budget), a backend that cannot run here is a BackendError, a file
    problem an OSError, too little memory torch's OutOfMemoryError. Anything else (a TypeError, a plain
    RuntimeError) is a bug: it keeps its traceback and exit status 1, rather than looking like bad input."""
    from cyclediff.engine.base import BackendError

    found: list[type[BaseException]] = [ValueError, OSError, BackendError, PIL.Image.DecompressionBombError]
    torch = sys.modules.get("torch")  # imported by now if the error came from it; never imported for this
    if torch is not None:
        found.append(torch.OutOfMemoryError)
    return tuple(found)


def message(err: BaseException) -> str:
    """One line; an argument error names the flag the user typed (--steps, not num_inference_steps)."""
    if isinstance(getattr(err, "field", None), str) and hasattr(err, "renamed"):  # InvalidArgument, MemoryBudgetError
        return one_line(err.renamed(flag_of(err.field)))
    return one_line(err)


def flag_of(field: str) -> str:
    """The command-line spelling of a request field."""
    return FIELD_FLAGS.get(field, "--" + field.replace("_", "-"))


def one_line(err: BaseException | str) -> str:
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def _run(args: argparse.Namespace) -> None:
    params = edit_params(args)
    _check_prompts(args)
    outputs = output_paths(args)

    def read() -> tuple:
        return read_image(args.image) if args.image else None, _load_code(args.code) if args.code else None

    def work(engine, inputs: tuple, files: OutputSet) -> None:
        image, code = inputs
        if args.image == SAMPLE:
            image = fit_sample(image, engine.manifest.sample_size)
        elif image is not None:
            check_image_size(image, engine, quiet=args.quiet)
        decoder = load_decoder(args, engine)
        if code is None:
            result = engine.run(edit_request(args.prompt, args.source_prompt, image, params, args.seed,
                                             args.clip_skip), decoder=decoder)
            edits, code = result.images, result.code
        else:
            _note_code_flags(args)
            edits = decode_all(decoder or engine, code, args.prompt, params.guidance_scale, args.clip_skip)
        _stage(files, outputs, image, edits, code, args)

    staged_run(args, outputs.every, read, work)


def staged_run(args: argparse.Namespace, paths, read: Callable[[], Any],
               work: Callable[[Any, Any, OutputSet], None]) -> list[Path]:
    """The skeleton of every editing CLI (cyclediff-run, its --method pix2pix-zero, cyclediff-guide): every output
    location checked before any compute, then read() the inputs, load the engine, work(engine, inputs, files)
    computes and stages its files, which are committed together (all or nothing, the block discards them on any
    error) and listed unless --quiet."""
    files = OutputSet(paths)
    files.check()
    inputs = read()
    engine = load_engine(args)
    with files:
        work(engine, inputs, files)
        written = files.commit()
    if not args.quiet:
        print("\n".join(map(str, written)))
    return written


def load_engine(args: argparse.Namespace, progress: bool | None = None):
    """The Engine the flags ask for; torch and the backends are imported only now, once the arguments are sane."""
    verbosity.configure(PROG, args.verbose)
    if args.quiet:  # transformers shows a weight-loading bar of its own
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    from cyclediff.runtime.engine import Engine

    try:
        return Engine.load(args.engine, backend=args.backend, device=args.device, max_batch=args.max_batch,
                           progress=not args.quiet if progress is None else progress, dtype=args.dtype,
                           threads=args.threads, verify=args.verify, max_memory=args.max_memory)
    except ImportError as err:
        raise CliError(f"--backend {args.backend} is not available here ({err}); try --backend onnxruntime") from err


def load_decoder(args: argparse.Namespace, engine, progress: bool | None = None):
    """--decoder-engine, loaded with --engine's flags and checked against it before any compute: None without it."""
    if args.decoder_engine is None:
        return None
    if Path(args.decoder_engine).resolve() == Path(args.engine).resolve():
        return engine  # one export: today's edit exactly, without a second copy of the models
    decoder = load_engine(argparse.Namespace(**{**vars(args), "engine": args.decoder_engine}), progress)
    why = engine.space.incompatibilities(decoder.space)
    if why:
        raise CliError(f"--decoder-engine {args.decoder_engine} cannot decode codes of --engine {args.engine}: "
                       f"{'; '.join(why)} (pass a fine-tune of the same base model)")
    return decoder


def edit_params(args: argparse.Namespace) -> EditParams:
    """The preset (or diffusers' defaults) with every explicitly given flag on top, checked by the request
    rules (runtime/core/checks.py); the other edit flags (seed, clip skip, engine sizes) by the same rules."""
    given = {field: getattr(args, dest) for dest, field in PARAM_FLAGS.items() if getattr(args, dest) is not None}
    try:
        params = dataclasses.replace(PRESETS[args.preset or "default"], **given)
        check_edit_steps(params.num_inference_steps, params.strength)
        check_optional_int("clip_skip", args.clip_skip, 0)
    except InvalidArgument as err:
        raise CliError(message(err)) from err
    check_seed_flag(args.seed)
    for flag in ("max_batch", "threads", "concurrency"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    return params


def check_seed_flag(seed: int | None) -> None:
    """--seed, by the request rules (every CLI takes it: cyclediff-run, its pix2pix-zero mode, cyclediff-guide)."""
    if seed is not None:
        try:
            check_seed("seed", seed)
        except InvalidArgument as err:
            raise CliError(message(err)) from err


def edit_request(prompts, source_prompt: str, image, params: EditParams, seed: int | None,
                 clip_skip: int | None):
    """The request every CLI edit runs: one shared encoding of `image`, decoded once per target prompt."""
    import torch

    from cyclediff.runtime.core.requests import EditRequest

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return EditRequest(list(prompts), source_prompt, image, params, generator, clip_skip=clip_skip,
                       one_encoding=True)


def output_paths(args: argparse.Namespace) -> Outputs:
    if args.out is None:
        raise CliError("--out is required (or --jobs FILE.jsonl, which names an out per line)")
    out = Path(args.out)
    check_format(out, "--out")
    grid = out.with_name(f"{out.stem}_grid.png") if args.grid else None
    code = Path(args.save_code) if args.save_code else None
    return Outputs(image_paths(out, len(args.prompt)), grid, code)


def check_format(out: Path, what: str) -> None:
    if out.suffix.lower() not in FORMATS:
        raise CliError(f"{what} {out}: unknown image format {out.suffix or '(no suffix)'!r}; use one of "
                       f"{', '.join(FORMATS)}")
    if FORMATS[out.suffix.lower()] == "WEBP" and not PIL.features.check("webp"):
        raise CliError(f"{what} {out}: this Pillow has no WebP support; use .png or .jpg")


def image_paths(out: Path, prompts: int) -> tuple[Path, ...]:
    """One prompt writes OUT; N prompts write OUT_0 ... OUT_{N-1} (same suffix)."""
    if prompts == 1:
        return (out,)
    return tuple(out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(prompts))


def _check_prompts(args: argparse.Namespace) -> None:
    if not args.prompt:
        raise CliError("--prompt is required (or --jobs FILE.jsonl, which gives the prompts per line)")
    if args.code is None and args.image is None:
        raise CliError("--image is required (a file, or 'sample'), unless --code decodes a saved LatentCode")
    if args.code is None and args.source_prompt is None:
        raise CliError("--source-prompt is required: a text describing the input image")
    if args.code is not None and args.image is not None and not args.grid:
        raise CliError("--image is not used with --code: the saved code already holds the encoded image (only "
                       "--grid shows --image, as the sheet's input tile); drop --image, or add --grid")
    for text in (args.source_prompt, *args.prompt):
        if text is not None and "\x00" in text:
            raise CliError("prompts must not contain NUL characters")


def sample_path() -> Path:
    from importlib.resources import files

    return Path(str(files("cyclediff.runtime") / "assets" / "sample.png"))


def read_image(spec: str, what: str = "--image") -> PIL.Image.Image:
    """Read and fully decode an image file as RGB (EXIF orientation applied, as diffusers' load_image)."""
    path = sample_path() if spec == SAMPLE else Path(spec)
    if not path.is_file():
        hint = " (the bundled sample is missing: reinstall cyclediff)" if spec == SAMPLE else ""
        raise CliError(f"{what} {spec}: no such file{hint}")
    try:
        with PIL.Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not halfway through the edit
            return PIL.ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise CliError(f"{what} {spec}: not a readable image ({one_line(err)})") from err


def fit_sample(image: PIL.Image.Image, size: int) -> PIL.Image.Image:
    return image if image.size == (size, size) else image.resize((size, size), resample=PIL.Image.LANCZOS)


def check_image_size(image: PIL.Image.Image, engine, quiet: bool = False, where: str = "") -> None:
    """Refuse a size the engine cannot take (too small, latents not a multiple of the UNet's downscale) before
    warning about one it can take but should not (far above the checkpoint's size)."""
    from cyclediff.runtime.core import images

    f = engine.manifest.dims.vae_scale
    w, h = images.floor_size(image.width, image.height, f)
    engine.core.check_latent_hw(h // f, w // f)
    if not quiet:
        warn_size(image, engine.manifest.sample_size, where)


def warn_size(image: PIL.Image.Image, native: int, where: str = "") -> None:
    """Attention cost grows with the square of the pixel count: a photo far above the checkpoint's size can
    need tens of GB. Say so up front (the edit still runs: the user may have the memory)."""
    if image.width * image.height > 4 * native * native:
        from tqdm.auto import tqdm

        tqdm.write(f"{PROG}: warning: {where}the image is {image.width}x{image.height}, the engine's native size "
                   f"is {native}x{native}; much larger images need far more memory and time (resize it first)",
                   file=sys.stderr)


def _load_code(path: str):
    from cyclediff.runtime.core.latent_code import LatentCode

    if not Path(path).is_file():
        raise CliError(f"--code {path}: no such file")
    return LatentCode.load(path)


def decode_all(engine, code, prompts: list[str], guidance_scale: float, clip_skip: int | None) -> list:
    """Every prompt decodes the one saved code (--code)."""
    return [engine.decode(code, prompt, guidance_scale, "pil", clip_skip=clip_skip).images[0] for prompt in prompts]


def _note_code_flags(args: argparse.Namespace) -> None:
    """The code fixes the schedule and noises: say so rather than silently ignoring those flags."""
    fixed = [f"--{d.replace('_', '-')}" for d in ("strength", "steps", "eta", "source_guidance_scale", "seed")
             if getattr(args, d) is not None]
    fixed += ["--source-prompt"] if args.source_prompt is not None else []
    if fixed and not args.quiet:
        print(f"{PROG}: note: {', '.join(fixed)} ignored: the saved code fixes them", file=sys.stderr)


def _stage(files: OutputSet, outputs: Outputs, image, edits: list[PIL.Image.Image], code,
           args: argparse.Namespace) -> None:
    """Stage every file (images, grid, code); staged_run renames them all into place together."""
    stage_images(files, outputs.images, edits)
    if outputs.grid is not None:
        sheet = encode_image(_sheet(image, edits, code, args), "PNG")
        files.stage(outputs.grid, lambda tmp: write_bytes(tmp, sheet))
    if outputs.code is not None:
        files.stage(outputs.code, code.save)


def stage_images(files: OutputSet, paths: tuple[Path, ...], edits: list[PIL.Image.Image]) -> None:
    fmt = FORMATS[paths[0].suffix.lower()]
    for path, edit in zip(paths, edits):
        data = encode_image(edit, fmt)
        files.stage(path, lambda tmp, data=data: write_bytes(tmp, data))


def write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # the rename that follows must not publish a file whose bytes are not on disk


def _sheet(image, edits: list[PIL.Image.Image], code, args: argparse.Namespace) -> PIL.Image.Image:
    from cyclediff.runtime.grid import contact_sheet

    tiles, captions = list(edits), list(args.prompt)
    if image is not None:
        tiles.insert(0, image)
        captions.insert(0, f"{code.source_prompts[0]} (input)")
    return contact_sheet(tiles, captions)


def encode_image(image: PIL.Image.Image, fmt: str) -> bytes:
    """Encode in memory first: a failing encoder (or a full disk later) never leaves a truncated file."""
    buf = io.BytesIO()
    options = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
