"""A sweep's run folder: its config (hashed: a restart must match it), one part file per finished encoding,
candidate images, and the result files. Every file is written to a temp name and renamed: never half-written.

    RUN_DIR/config.json          what the sweep evaluates (and its hash)
    RUN_DIR/parts/<triplet>/<encoding>.json   the metrics of one encoding's candidates: the resume unit
    RUN_DIR/images/<triplet>/<candidate>.png  candidate images (all, or those the contact sheets show)
    RUN_DIR/candidates.csv  selected.csv  summary.txt  sheets/<triplet>.png  plots/tradeoff_*.png
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from pathlib import Path

from cyclediff.export.atomic_files import atomic_write_bytes, atomic_write_text

CONFIG = "config.json"
FORMAT = "cyclediff.eval.run/1"


class RunDirError(ValueError):
    """RUN_DIR holds another sweep (or something else); the message names the difference and the fix."""


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


_ABSENT = object()


def config_difference(old: dict, new: dict) -> str:
    """Only what changed, old -> new: "grid: etas [0.1, 1.0] -> [0.5]; size: 32 -> 64". Nested settings
    (the grid, each triplet's record) are compared key by key, so an unchanged axis is never printed."""
    parts = []
    for key in sorted(set(old) | set(new)):
        changes = list(_changes(old.get(key, _ABSENT), new.get(key, _ABSENT), ""))
        if changes:
            parts.append(f"{key}: " + ", ".join(f"{path} {a} -> {b}".lstrip() for path, a, b in changes))
    return "; ".join(parts)


def _changes(old, new, path: str):
    """(path below the top key, old text, new text) per differing leaf. Lists of records (the triplets) are
    compared item by item (an added or removed one is printed whole); lists of numbers (a grid axis) are one
    value."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            yield from _changes(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{path}.{key}".lstrip("."))
    elif _records(old) and _records(new):
        for i, (a, b) in enumerate(itertools.zip_longest(old, new, fillvalue=_ABSENT)):
            yield from _changes(a, b, f"{path}[{i}]")
    elif old != new:
        yield path, _shown(old), _shown(new)


def _records(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _shown(value) -> str:
    return "(none)" if value is _ABSENT else json.dumps(value, ensure_ascii=False)


class RunStore:
    def __init__(self, root: Path):
        self.root = root

    def open(self, config: dict) -> bool:
        """Start a new run folder, or check that an existing one was made with this exact config.
        Returns True when resuming. Raises RunDirError (nothing written) on any mismatch."""
        path = self.root / CONFIG
        if path.is_file():
            self._check_same(json.loads(path.read_text(encoding="utf-8")), config)
            return True
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise RunDirError(f"--out {self.root} exists and is not a cyclediff-eval run folder; choose a new --out")
        record = {"format": FORMAT, "hash": config_hash(config), "config": config}
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return False

    def _check_same(self, record: dict, config: dict) -> None:
        if record.get("format") != FORMAT:
            raise RunDirError(f"--out {self.root}: {CONFIG} is not a cyclediff-eval run ({record.get('format')!r})")
        if record.get("hash") == config_hash(config):
            return
        # The new config as the stored one reads back (tuples become lists), so equal values compare equal.
        new = json.loads(json.dumps(config))
        difference = config_difference(record.get("config", {}), new) or "equal values, another config hash"
        raise RunDirError(f"--out {self.root} holds a sweep with other arguments ({difference}); "
                          f"run again with the same arguments to resume it, or choose a new --out")

    # ---- parts: one per finished encoding --------------------------------------------------------
    def part_path(self, triplet_id: str, encoding_key: str) -> Path:
        return self.root / "parts" / triplet_id / f"{encoding_key}.json"

    def read_part(self, triplet_id: str, encoding_key: str) -> list[dict] | None:
        path = self.part_path(triplet_id, encoding_key)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))["rows"]

    def write_part(self, triplet_id: str, encoding_key: str, rows: list[dict]) -> None:
        atomic_write_text(self.part_path(triplet_id, encoding_key), json.dumps({"rows": rows}) + "\n")

    # ---- files -------------------------------------------------------------------------------------
    def image_path(self, triplet_id: str, candidate: str) -> Path:
        return self.root / "images" / triplet_id / f"{candidate}.png"

    def write_png(self, path: Path, image) -> None:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())

    def write_csv(self, name: str, rows: list[dict], columns: list[str]) -> Path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        path = self.root / name
        atomic_write_text(path, buf.getvalue())
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self.root / name
        atomic_write_text(path, text)
        return path
