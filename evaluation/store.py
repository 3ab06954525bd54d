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
import json
from pathlib import Path

from cyclediff.export.manifest import atomic_write_bytes, atomic_write_text

CONFIG = "config.json"
FORMAT = "cyclediff.eval.run/1"


class RunDirError(ValueError):
    """RUN_DIR holds another sweep (or something else); the message names the difference and the fix."""


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


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
        old = record.get("config", {})
        diffs = [f"{k}: {old.get(k)!r} then, {config.get(k)!r} now" for k in sorted(set(old) | set(config))
                 if old.get(k) != config.get(k)]
        raise RunDirError(f"--out {self.root} holds a sweep with other arguments ({'; '.join(diffs)}); "
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
