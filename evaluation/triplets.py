"""The evaluation set: (image, source text, target text) triplets from a CSV or JSONL file, checked up front."""
from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import PIL.Image
import PIL.ImageOps

FIELDS = ("image", "source_prompt", "target_prompt")
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


def load_triplets(path: Path) -> list[Triplet]:
    """Read and check the whole file: every problem of every line is reported at once, before any work."""
    if not path.is_file():
        raise TripletError(f"--triplets {path}: no such file")
    rows = _read_rows(path)
    triplets, errors = [], []
    for line, row in rows:
        try:
            triplets.append(_triplet(row, line, path.parent))
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
                       f"{','.join(FIELDS)}) or .jsonl")


def _triplet(row, line: int, base: Path) -> Triplet:
    if not isinstance(row, dict) or "__error__" in row:
        raise TripletError(row.get("__error__") if isinstance(row, dict) else "not a JSON object")
    unknown = sorted(k for k in row if k not in FIELDS + OPTIONAL)
    missing = [k for k in FIELDS if not isinstance(row.get(k), str) or not row[k].strip()]
    if unknown:
        raise TripletError(f"unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS + OPTIONAL)}")
    if missing:
        raise TripletError(f"missing or empty {missing[0]!r} (each triplet needs {', '.join(FIELDS)})")
    image = _image_path(row["image"], base)
    ident = row.get("id") or f"{line:04d}-{image.stem}"
    return Triplet(_safe_id(str(ident)), line, image, row["source_prompt"], row["target_prompt"])


def _image_path(spec: str, base: Path) -> Path:
    if spec == SAMPLE:
        from importlib.resources import files

        return Path(str(files("cyclediff.runtime") / "assets" / "sample.png"))
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise TripletError(f"image {spec}: no such file (relative paths are relative to the triplets file)")
    return path


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
    """The triplet's image as RGB, size x size: center-cropped to a square and resized when it is not already."""
    try:
        with PIL.Image.open(triplet.image) as img:
            img.load()  # decode now: a truncated file fails here, before any compute
            rgb = PIL.ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise TripletError(f"line {triplet.line}: image {triplet.image}: not a readable image ({err})") from err
    if rgb.size == (size, size):
        return rgb
    return PIL.ImageOps.fit(rgb, (size, size), method=PIL.Image.Resampling.BICUBIC)
