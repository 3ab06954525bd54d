"""DIR/.export-state.json: which model files a previous (possibly killed) export left verified, for reuse."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from cyclediff.export.atomic_files import atomic_write_text
from cyclediff.export.manifest import sha256_files

STATE = ".export-state.json"
STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One verified model file set: the key it was exported under and the sha256 of its files."""

    key: str
    files: tuple[str, ...]  # relative to DIR, .onnx first
    sha256: str
    exporter: str
    parity: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ExportState:
    checkpoint_hash: str | None = None
    models: dict[str, ModelRecord] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, folder: Path) -> ExportState:
        """The recorded state, or an empty one when missing or unreadable (then nothing is reused)."""
        try:
            d = json.loads((folder / STATE).read_text(encoding="utf-8"))
            if d.get("version") != STATE_VERSION:
                return cls()
            models = {k: ModelRecord(v["key"], tuple(v["files"]), v["sha256"], v["exporter"], v.get("parity", {}))
                      for k, v in d["models"].items()}
            return cls(d["checkpoint_hash"], models)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls()

    def save(self, folder: Path) -> None:
        models = {k: {**dataclasses.asdict(v), "files": list(v.files)} for k, v in self.models.items()}
        d = {"version": STATE_VERSION, "checkpoint_hash": self.checkpoint_hash, "models": models}
        atomic_write_text(folder / STATE, json.dumps(d, indent=2, sort_keys=True) + "\n")

    def with_model(self, name: str, record: ModelRecord) -> ExportState:
        return dataclasses.replace(self, models={**self.models, name: record})

    def reusable(self, folder: Path, name: str, key: str) -> ModelRecord | None:
        """The record for `name` if it was made under `key` and its files still have the recorded hash."""
        record = self.models.get(name)
        if record is None or record.key != key:
            return None
        paths = [folder / f for f in record.files]
        if not all(p.is_file() for p in paths) or sha256_files(paths) != record.sha256:
            return None
        return record


def model_key(checkpoint_hash: str, name: str, settings: dict[str, Any], code: dict[str, str]) -> str:
    """What a model file depends on: checkpoint bytes, model, exporter settings, tool versions, wrapper code."""
    blob = json.dumps({"checkpoint": checkpoint_hash, "model": name, "settings": settings, "code": code},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
