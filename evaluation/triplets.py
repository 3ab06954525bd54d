"""The evaluation set: (image, source text, target text) triplets from a CSV or JSONL file, or a JSON list in the
paper's repository format, checked up front.

The paper's format (ChenWu98/cycle-diffusion `data/translate-text.json`): a JSON list of {"encode_text",
"decode_text", "img_path"}, image paths relative to the repository root (the file lives in REPO/data/).

Images of every size and mode are prepared as the paper's preprocessing does (its `pil_loader` then
`CenterCropLongEdge`, `Resize`): converted to RGB, center-cropped to a square on the long edge, resized to the
evaluation side with bilinear filtering. Where the paper's loader goes wrong we do not follow it: the EXIF
orientation is applied first (as diffusers' load_image), and 16-bit images are scaled to 8 bits (PIL's plain
convert would clip them to white). Alpha is dropped, keeping the stored colours (PIL's RGBA -> RGB, as there).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import PIL.Image
import PIL.ImageOps

FIELDS = ("image", "source_prompt", "target_prompt")
PAPER_FIELDS = {"img_path": "image", "encode_text": "source_prompt", "decode_text": "target_prompt"}
OPTIONAL = ("id",)
SAMPLE = "sample"  # the image bundled with cyclediff


class TripletError(ValueError):
    """A triplets file that cannot be evaluated; the message lists every bad line and what to fix."""


@dataclasses.dataclass(frozen=True)
class Triplet:
    """One input: line is its line in the file (for messages); id names its outputs (unique, file-name safe)."""

    id: str
    line: int
    image: Path
    source_prompt: str
    target_prompt: str


def load_triplets(path: Path, image_root: Path | None = None) -> list[Triplet]:
    """Read and check the whole file: every problem of every line is reported at once, before any work.

    image_root: where relative image paths start (default: the file's folder; for the paper's JSON format, the
    file's folder or its parent, the repository root, whichever holds the image)."""
    if not path.is_file():
        raise TripletError(f"--triplets {path}: no such file")
    rows = _read_rows(path)
    paper = path.suffix.lower() == ".json"
    roots = [image_root] if image_root is not None else [path.parent, path.parent.parent] if paper else [path.parent]
    triplets, errors = [], []
    for line, row in rows:
        try:
            triplets.append(_triplet(_from_paper(row) if paper else row, line, roots))
        except TripletError as err:
            errors.append(f"{path.name}:{line}: {err}")
    errors += _duplicate_ids(triplets, path.name)
    if errors:
        raise TripletError("bad triplets (fix these lines):\n  " + "\n  ".join(errors))
    if not triplets:
        raise TripletError(f"--triplets {path}: no triplets; give one per line with {', '.join(FIELDS)}")
    return triplets


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, raw row) per record. CSV needs a header row; JSONL one object per line (blank lines skipped)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return [(reader.line_num, row) for row in reader]
    if suffix == ".json":
        return _paper_rows(path)
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if text.strip():
                try:
                    rows.append((number, json.loads(text)))
                except json.JSONDecodeError as err:
                    rows.append((number, {"__error__": f"not valid JSON ({err.msg})"}))
        return rows
    raise TripletError(f"--triplets {path}: unknown file type {suffix or '(none)'}; use .csv (with a header row "
                       f"{','.join(FIELDS)}), .jsonl, or the paper's .json list")


def _paper_rows(path: Path) -> list[tuple[int, dict]]:
    """(entry number from 1, entry) of the paper's JSON list."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TripletError(f"--triplets {path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise TripletError(f"--triplets {path}: a .json file is the paper's format, a list of objects with "
                           f"{', '.join(PAPER_FIELDS)}; got a {type(entries).__name__}")
    return list(enumerate(entries, start=1))


def _from_paper(entry) -> dict:
    """A paper entry in our field names (unknown keys kept, so that they are reported)."""
    if not isinstance(entry, dict):
        return {"__error__": "not a JSON object"}
    missing = [k for k in PAPER_FIELDS if not isinstance(entry.get(k), str) or not entry[k].strip()]
    if missing:
        return {"__error__": f"missing or empty {missing[0]!r} (each entry needs {', '.join(PAPER_FIELDS)})"}
    return {PAPER_FIELDS.get(k, k): v for k, v in entry.items()}


def _triplet(row, line: int, roots: list[Path]) -> Triplet:
    if not isinstance(row, dict) or "__error__" in row:
        raise TripletError(row.get("__error__") if isinstance(row, dict) else "not a JSON object")
    unknown = sorted(k for k in row if k not in FIELDS + OPTIONAL)
    missing = [k for k in FIELDS if not isinstance(row.get(k), str) or not row[k].strip()]
    if unknown:
        raise TripletError(f"unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS + OPTIONAL)}")
    if missing:
        raise TripletError(f"missing or empty {missing[0]!r} (each triplet needs {', '.join(FIELDS)})")
    image = _image_path(row["image"], roots)
    ident = row.get("id") or f"{line:04d}-{image.stem}"
    return Triplet(_safe_id(str(ident)), line, image, row["source_prompt"], row["target_prompt"])


def _image_path(spec: str, roots: list[Path]) -> Path:
    if spec == SAMPLE:
        from importlib.resources import files

        return Path(str(files("cyclediff.runtime") / "assets" / "sample.png"))
    path = Path(spec).expanduser()
    tried = [path] if path.is_absolute() else [root / path for root in roots]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise TripletError(f"image {spec}: no such file (looked for {' and '.join(map(str, tried))}; relative paths "
                       "start at the triplets file's folder, or --image-root)")


def _safe_id(text: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    if not safe:
        raise TripletError(f"id {text!r} has no letters or digits to name its files with")
    return safe[:80]


def _duplicate_ids(triplets: list[Triplet], name: str) -> list[str]:
    seen: dict[str, int] = {}
    errors = []
    for t in triplets:
        if t.id in seen:
            errors.append(f"{name}:{t.line}: id {t.id!r} already used by line {seen[t.id]}; give unique ids")
        seen.setdefault(t.id, t.line)
    return errors


def read_image(triplet: Triplet, size: int) -> PIL.Image.Image:
    """The triplet's image as RGB, size x size, prepared as the module docstring says."""
    try:
        with PIL.Image.open(triplet.image) as img:
            img.load()  # decode now: a truncated file fails here, before any compute
            rgb = to_rgb(PIL.ImageOps.exif_transpose(img))
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise TripletError(f"line {triplet.line}: image {triplet.image}: not a readable image ({err})") from err
    if rgb.size == (size, size):
        return rgb
    return PIL.ImageOps.fit(rgb, (size, size), method=PIL.Image.Resampling.BILINEAR)  # the paper's crop + Resize


def to_rgb(img: PIL.Image.Image) -> PIL.Image.Image:
    """Any mode -> 8-bit RGB. 16- and 32-bit integer images are scaled (65535 -> 255) and float ones taken on
    [0, 1] (or [0, 255] when larger); PIL's own convert would clip them."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        import numpy as np

        data = np.asarray(img, dtype=np.float64)
        peak = data.max(initial=0)
        top = 65535.0 if img.mode.startswith("I;16") or (img.mode == "I" and peak > 255) else \
            1.0 if img.mode == "F" and peak <= 1 else 255.0
        img = PIL.Image.fromarray(np.clip(np.round(data * 255.0 / top), 0, 255).astype(np.uint8), "L")
    return img if img.mode == "RGB" else img.convert("RGB")
