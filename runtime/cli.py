"""`cyclediff-run`: edit an image with an exported engine; every input is checked before any file is written."""
from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
from pathlib import Path

import PIL.features
import PIL.Image
import PIL.ImageOps

from cyclediff.runtime.config import BACKENDS, PRESETS, EditParams

PROG = "cyclediff-run"
SAMPLE = "sample"
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
# argparse dest -> EditParams field; these flags default to None so that a --preset fills only what is unset.
_PARAM_FLAGS = {"strength": "strength", "steps": "num_inference_steps", "guidance_scale": "guidance_scale",
                "source_guidance_scale": "source_guidance_scale", "eta": "eta"}

EXAMPLE = """\
example:
  cyclediff-export --ckpt sd-v1-4 --out exports/sd14
  cyclediff-run --engine exports/sd14 --image sample --source-prompt "a house on a hill" \\
      --prompt "a castle on a hill" --prompt "a barn on a hill" --seed 0 --grid --out edits/house.png
  # -> edits/house_0.png, edits/house_1.png and the contact sheet edits/house_grid.png

output naming:
  one --prompt writes exactly OUT; N prompts write OUT's stem + "_0" ... "_{N-1}" + OUT's suffix, all
  decoded from ONE shared encoding of the image. --grid adds OUT's stem + "_grid.png". The format follows
  OUT's suffix (.png, .jpg/.jpeg, .webp). Files are written only after every edit succeeded, each atomically.
"""


class CliError(ValueError):
    """A bad command line or input file; the message names the flag and the fix."""


@dataclasses.dataclass(frozen=True)
class Outputs:
    images: tuple[Path, ...]
    grid: Path | None
    code: Path | None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Zero-shot text-guided image editing (CycleDiffusion) with an engine "
                                            "made by cyclediff-export. Options are named as in diffusers' "
                                            "CycleDiffusionPipeline.")
    p.add_argument("--engine", required=True, metavar="DIR", help="export directory (from cyclediff-export)")
    p.add_argument("--image", metavar="IN", help=f"input image file, or '{SAMPLE}' for the bundled sample picture "
                                                 "(resized to the engine's native size); optional with --code")
    p.add_argument("--source-prompt", metavar="S", help="text describing the input image (not used with --code)")
    p.add_argument("--prompt", action="append", required=True, metavar="T",
                   help="target text; repeat for several edits of one shared encoding")
    p.add_argument("--out", required=True, metavar="OUT", help="output image (.png, .jpg, .jpeg, .webp)")
    _add_edit_flags(p)
    _add_engine_flags(p)
    p.add_argument("--grid", action="store_true", help="also write a before/after contact sheet OUTSTEM_grid.png")
    p.add_argument("--save-code", metavar="PATH",
                   help="also save the image's LatentCode (decode it later with --code)")
    p.add_argument("--code", metavar="PATH", help="decode this saved LatentCode instead of encoding an image")
    p.add_argument("--quiet", action="store_true", help="no progress bars, print nothing on success")
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
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="runtime backend (default auto)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"), help="model precision; fp16 needs cuda")
    p.add_argument("--max-batch", type=int, default=16, metavar="N",
                   help="largest UNet batch of the encoder (default 16)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except _errors() as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    return 0


def _errors() -> tuple[type[BaseException], ...]:
    # RuntimeError covers the project's BackendError, a missing CUDA device and out-of-memory: all are things
    # a user fixes by changing the command, so they get a message rather than a traceback.
    # ImportError: a backend whose package is not installed.
    return ValueError, TypeError, OSError, RuntimeError, ImportError, PIL.Image.DecompressionBombError


def _one_line(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


def _run(args: argparse.Namespace) -> None:
    params = edit_params(args)
    outputs = output_paths(args)
    _check_prompts(args)
    image = read_image(args.image) if args.image else None
    code = _load_code(args.code) if args.code else None
    _quiet_libraries(args.quiet)
    from cyclediff.runtime.engine import Engine  # torch and the backends load only once the arguments are sane

    try:
        engine = Engine.load(args.engine, backend=args.backend, device=args.device, max_batch=args.max_batch,
                             progress=not args.quiet, dtype=args.dtype)
    except ImportError as err:
        raise CliError(f"--backend {args.backend} is not available here ({err}); try --backend onnxruntime") from err
    if args.image == SAMPLE:
        image = _fit_sample(image, engine.manifest.sample_size)
    elif image is not None and not args.quiet:
        _warn_size(image, engine.manifest.sample_size)
    if code is None:
        code = _encode(engine, image, args, params)
    else:
        _note_code_flags(args)
    edits = _decode_all(engine, code, args, params.guidance_scale)
    _write(outputs, image, edits, code, args)


def edit_params(args: argparse.Namespace) -> EditParams:
    """The preset (or diffusers' defaults) with every explicitly given flag on top; validated by EditParams."""
    from cyclediff.runtime.schedule import num_edit_steps

    given = {field: getattr(args, dest) for dest, field in _PARAM_FLAGS.items() if getattr(args, dest) is not None}
    try:
        params = dataclasses.replace(PRESETS[args.preset or "default"], **given)
    except ValueError as err:
        raise CliError(_name_flag(str(err))) from err
    if num_edit_steps(params.num_inference_steps, params.strength) == 0:
        raise CliError(f"--strength {params.strength} with --steps {params.num_inference_steps} runs zero denoising "
                       "steps (int(steps * strength) = 0); raise --strength or --steps")
    if args.max_batch < 1:
        raise CliError(f"--max-batch must be >= 1, got {args.max_batch}")
    if args.clip_skip is not None and args.clip_skip < 0:
        raise CliError(f"--clip-skip must be >= 0, got {args.clip_skip}")
    return params


def _name_flag(message: str) -> str:
    """EditParams speaks diffusers' names; prefix the flag the user actually typed."""
    for dest, field in sorted(_PARAM_FLAGS.items(), key=lambda kv: -len(kv[1])):  # longest first: no prefix clash
        if message.startswith(field + " "):
            return f"--{dest.replace('_', '-')}: {message}"
    return message


def output_paths(args: argparse.Namespace) -> Outputs:
    out = Path(args.out)
    if out.suffix.lower() not in FORMATS:
        raise CliError(f"--out {out}: unknown image format {out.suffix or '(no suffix)'!r}; use one of "
                       f"{', '.join(FORMATS)}")
    n = len(args.prompt)
    images = (out,) if n == 1 else tuple(out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n))
    grid = out.with_name(f"{out.stem}_grid.png") if args.grid else None
    code = Path(args.save_code) if args.save_code else None
    every = [p for p in (*images, grid, code) if p is not None]
    for path in every:
        _check_writable(path)
    if len({p.resolve() for p in every}) != len(every):
        raise CliError(f"output paths collide: {', '.join(map(str, every))}; choose another --out or --save-code")
    if FORMATS[out.suffix.lower()] == "WEBP" and not PIL.features.check("webp"):
        raise CliError(f"--out {out}: this Pillow has no WebP support; use .png or .jpg")
    return Outputs(images, grid, code)


def _check_writable(path: Path) -> None:
    """Fail now, not after minutes of work: the nearest existing ancestor must be a writable folder."""
    if path.is_dir():
        raise CliError(f"{path} is a folder; name a file to write")
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"cannot write {path}: {folder} is not a writable folder")


def _check_prompts(args: argparse.Namespace) -> None:
    if args.code is None and args.image is None:
        raise CliError("--image is required (a file, or 'sample'), unless --code decodes a saved LatentCode")
    if args.code is None and args.source_prompt is None:
        raise CliError("--source-prompt is required: a text describing the input image")
    for text in (args.source_prompt, *args.prompt):
        if text is not None and "\x00" in text:
            raise CliError("prompts must not contain NUL characters")


def sample_path() -> Path:
    from importlib.resources import files

    return Path(str(files("cyclediff.runtime") / "assets" / "sample.png"))


def read_image(spec: str) -> PIL.Image.Image:
    """Read and fully decode an image file as RGB (EXIF orientation applied, as diffusers' load_image)."""
    path = sample_path() if spec == SAMPLE else Path(spec)
    if not path.is_file():
        hint = " (the bundled sample is missing: reinstall cyclediff)" if spec == SAMPLE else ""
        raise CliError(f"--image {spec}: no such file{hint}")
    try:
        with PIL.Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not halfway through the edit
            return PIL.ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise CliError(f"--image {spec}: not a readable image ({_one_line(err)})") from err


def _fit_sample(image: PIL.Image.Image, size: int) -> PIL.Image.Image:
    return image if image.size == (size, size) else image.resize((size, size), resample=PIL.Image.LANCZOS)


def _warn_size(image: PIL.Image.Image, native: int) -> None:
    """Attention cost grows with the square of the pixel count: a photo far above the checkpoint's size can
    need tens of GB. Say so up front (the edit still runs: the user may have the memory)."""
    if image.width * image.height > 4 * native * native:
        print(f"{PROG}: warning: the image is {image.width}x{image.height}, the engine's native size is "
              f"{native}x{native}; much larger images need far more memory and time (resize it first)",
              file=sys.stderr)


def _load_code(path: str):
    from cyclediff.runtime.latent_code import LatentCode

    if not Path(path).is_file():
        raise CliError(f"--code {path}: no such file")
    return LatentCode.load(path)


def _quiet_libraries(quiet: bool) -> None:
    if quiet:  # transformers shows a weight-loading bar of its own
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _encode(engine, image: PIL.Image.Image, args: argparse.Namespace, params: EditParams):
    import torch

    generator = torch.Generator().manual_seed(args.seed) if args.seed is not None else None
    # As CycleDiffusionPipeline: with guidance_scale <= 1 the source branch runs unguided.
    source_scale = params.source_guidance_scale if params.guidance_scale > 1 else 1.0
    return engine.encode(image, args.source_prompt, strength=params.strength,
                         num_inference_steps=params.num_inference_steps, source_guidance_scale=source_scale,
                         eta=params.eta, generator=generator, clip_skip=args.clip_skip)


def _decode_all(engine, code, args: argparse.Namespace, guidance_scale: float) -> list[PIL.Image.Image]:
    from tqdm.auto import tqdm

    edits = []
    with tqdm(total=len(args.prompt), desc="prompts", disable=args.quiet or len(args.prompt) < 2) as bar:
        for prompt in args.prompt:
            edits.append(engine.decode(code, prompt, guidance_scale, "pil", clip_skip=args.clip_skip).images[0])
            bar.update(1)
    return edits


def _note_code_flags(args: argparse.Namespace) -> None:
    """The code fixes the schedule and noises: say so rather than silently ignoring those flags."""
    fixed = [f"--{d.replace('_', '-')}" for d in ("strength", "steps", "eta", "source_guidance_scale", "seed")
             if getattr(args, d) is not None]
    fixed += ["--source-prompt"] if args.source_prompt is not None else []
    if fixed and not args.quiet:
        print(f"{PROG}: note: {', '.join(fixed)} ignored: the saved code fixes them", file=sys.stderr)


def _write(outputs: Outputs, image, edits: list[PIL.Image.Image], code, args: argparse.Namespace) -> None:
    from cyclediff.export.manifest import atomic_write_bytes

    fmt = FORMATS[outputs.images[0].suffix.lower()]
    blobs = [(p, encode_image(e, fmt)) for p, e in zip(outputs.images, edits)]
    if outputs.grid is not None:
        blobs.append((outputs.grid, encode_image(_sheet(image, edits, code, args), "PNG")))
    for path, data in blobs:
        atomic_write_bytes(path, data)
    if outputs.code is not None:
        code.save(outputs.code)
    if not args.quiet:
        for path in [p for p, _ in blobs] + ([outputs.code] if outputs.code else []):
            print(path)


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
