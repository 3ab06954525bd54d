"""manifest.json: the versioned contract between `cyclediff-export` and every runtime (Python and C++)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

from cyclediff.export.atomic_files import atomic_write_text
from cyclediff.export.specs import Dims, ModelSpec, TensorSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
TORCH_ONLY = "torch_only"  # extra key: graphs for the torch backend only (ExportSettings.torch_only)


class ManifestError(ValueError):
    """An export directory that does not load; the message says how to fix it (usually: re-export)."""


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One exported graph: file (relative to the export dir), its sha256, and its I/O declarations."""

    file: str
    sha256: str
    spec: ModelSpec
    data_files: tuple[str, ...] = ()  # ONNX external-data files (models > 2 GB), hashed into sha256

    def to_json(self) -> dict[str, Any]:
        io = {k: [dataclasses.asdict(t) for t in getattr(self.spec, k)] for k in ("inputs", "outputs")}
        return {"file": self.file, "sha256": self.sha256, "data_files": list(self.data_files), **io}

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any]) -> ModelEntry:
        def tensors(key: str) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in d[key])

        spec = ModelSpec(name, tensors("inputs"), tensors("outputs"))
        return cls(d["file"], d["sha256"], spec, tuple(d.get("data_files", ())))


@dataclasses.dataclass(frozen=True)
class Manifest:
    checkpoint: dict[str, Any]  # CheckpointRef.to_json() + "content_hash"
    scheduler: dict[str, Any]  # SchedulerConfig.to_json()
    dims: Dims
    vae_scaling_factor: float
    sample_size: int  # the checkpoint's native image side (512 for SD v1)
    models: dict[str, ModelEntry]
    tokenizer_files: dict[str, str]  # file name in DIR/tokenizer -> sha256
    tools: dict[str, str]  # package -> version at export time
    opset: int
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # later stages (e.g. TensorRT plans)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "checkpoint": self.checkpoint,
            "scheduler": self.scheduler,
            "dims": dataclasses.asdict(self.dims),
            "vae_scaling_factor": self.vae_scaling_factor,
            "sample_size": self.sample_size,
            "opset": self.opset,
            "models": {k: v.to_json() for k, v in self.models.items()},
            "tokenizer_files": self.tokenizer_files,
            "tools": self.tools,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest schema_version {version!r} is not the {SCHEMA_VERSION} this cyclediff reads; "
                "re-run `cyclediff-export` with this version (or install the cyclediff that wrote it)"
            )
        try:
            return cls(
                checkpoint=d["checkpoint"],
                scheduler=d["scheduler"],
                dims=Dims(**d["dims"]),
                vae_scaling_factor=float(d["vae_scaling_factor"]),
                sample_size=int(d["sample_size"]),
                models={k: ModelEntry.from_json(k, v) for k, v in d["models"].items()},
                tokenizer_files=dict(d["tokenizer_files"]),
                tools=dict(d["tools"]),
                opset=int(d["opset"]),
                extra=dict(d.get("extra", {})),
            )
        except (KeyError, TypeError) as err:
            raise ManifestError(f"manifest is malformed ({err!r}); re-run `cyclediff-export`") from err

    def identity(self) -> dict[str, Any]:
        """What a LatentCode's meaning depends on: the models' content (checkpoint bytes, fused LoRAs, each
        graph's sha256, the tokenizer) and the schedule. Nothing incidental: not paths, tool versions, or the
        derived programs and caches under `extra` (re-running an export, or adding --torchscript, keeps it)."""
        ckpt = {"content_hash": self.checkpoint.get("content_hash"),
                "loras": [{"sha256": lo["sha256"], "scale": lo["scale"]} for lo in self.checkpoint.get("loras", [])]}
        return {"schema_version": self.schema_version, "checkpoint": ckpt, "scheduler": self.scheduler,
                "dims": dataclasses.asdict(self.dims), "vae_scaling_factor": self.vae_scaling_factor,
                "sample_size": self.sample_size, "models": {k: v.sha256 for k, v in self.models.items()},
                "tokenizer_files": self.tokenizer_files}

    @property
    def digest(self) -> str:
        """Identity of this export: sha256 of the canonical JSON of identity(). LatentCodes record it; the C++
        host computes the same (native/src/manifest.cpp)."""
        return _sha256_json(self.identity())

    @property
    def legacy_digest(self) -> str:
        """The digest cyclediff wrote into codes before 0.2 (the whole manifest's JSON): codes saved then still
        decode on the export that made them, while that export is unchanged."""
        return _sha256_json(self.to_json())

    @property
    def torch_only(self) -> bool:
        """Made by `cyclediff-export --torch-only`: no other backend may load it."""
        return bool(self.extra.get(TORCH_ONLY))

    def made(self, digest: str) -> bool:
        """Did this export (unchanged) make a code or inversion that records `digest`?"""
        return digest in (self.digest, self.legacy_digest)

    @classmethod
    def load(cls, folder: str | Path, verify_files: bool = True) -> Manifest:
        folder = Path(folder)
        path = folder / MANIFEST
        if not path.is_file():
            raise ManifestError(_not_an_export(folder))
        try:
            manifest = cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path} is not valid JSON ({err}); re-run `cyclediff-export`") from err
        if verify_files:
            manifest.verify_files(folder)
        return manifest

    def verify_files(self, folder: Path, models: tuple[str, ...] | None = None) -> None:
        """Every referenced file exists and has the recorded hash; else ManifestError naming it."""
        for name, entry in self.models.items():
            if models is None or name in models:
                check_files(folder, [entry.file, *entry.data_files], entry.sha256, f"model {name}")
        for file, sha in self.tokenizer_files.items():
            check_files(folder, [f"{TOKENIZER_DIR}/{file}"], sha, "tokenizer file")

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / MANIFEST, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _not_an_export(folder: Path) -> str:
    """Why `folder` does not load, and the command that fixes it (a file: its folder, when that is an export)."""
    if folder.exists() and not folder.is_dir():
        if (folder.parent / MANIFEST).is_file():
            return (f"{folder} is a file of the cyclediff export {folder.parent}; --engine (Engine.load) takes the "
                    f"export folder: pass {shlex.quote(str(folder.parent))}")
        return (f"{folder} is a file, not a cyclediff export folder; --engine (Engine.load) takes the folder that "
                "`cyclediff-export --ckpt CKPT --out DIR` wrote")
    return (f"{folder} is not a cyclediff export (no {MANIFEST}); make one there with "
            f"`cyclediff-export --ckpt CKPT --out {shlex.quote(str(folder))}`")


def check_files(folder: Path, files: list[str], sha: str, what: str, fix: str = "") -> None:
    """`files` (relative to folder, data files after the main one) exist and hash to `sha`; else ManifestError.

    fix: the command that rebuilds them (default: re-run `cyclediff-export` into folder)."""
    paths = [folder / f for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    fix = fix or f"re-run `cyclediff-export` into {folder}"
    if missing:
        raise ManifestError(f"{what}: missing {', '.join(missing)}; {fix}")
    if sha256_files(paths) != sha:
        # One hash covers a graph and its external data: name them all, any of them may be the changed one.
        name = " + ".join([str(paths[0]), *(p.name for p in paths[1:])])
        raise ManifestError(f"{what}: {name} does not match its recorded hash (changed or truncated); {fix}")


def sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()
