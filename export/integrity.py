"""File integrity without hashing gigabytes on every load: sizes + sampled-block stamps, and the full sha256 check.

The export records, in manifest.extra["integrity"], each file's size and a *stamp*: the sha256 of its size and
of sampled blocks (the whole file when it is at most `max_blocks` blocks, else `max_blocks` blocks spread evenly
plus the last one). A load checks stamps ("fast": reads at most ~16 MiB a file); `verify="full"` and
`cyclediff-export --verify DIR` hash every byte against the manifest's sha256.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cyclediff.export import checkpoint
from cyclediff.export.checkpoint import CheckpointRef
from cyclediff.export.manifest import TOKENIZER_DIR, Manifest, ManifestError, check_files

SECTION = "integrity"  # manifest.extra[SECTION]
SECTION_SCHEMA = 1
MODES = ("fast", "full")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Which blocks a stamp hashes. Recorded next to the stamps, so a later change does not break old exports."""

    block: int = 1 << 16  # 64 KiB
    max_blocks: int = 256  # files up to block * max_blocks (16 MiB) are hashed whole

    def ranges(self, size: int) -> list[tuple[int, int]]:
        """(offset, length) of the sampled blocks of a file of `size` bytes, in file order."""
        if size <= self.block * self.max_blocks:
            return [(0, size)]
        stride = -(-size // self.max_blocks)  # ceil: at most max_blocks starts below size
        starts = sorted({*range(0, size, stride), size - self.block})
        return [(s, min(self.block, size - s)) for s in starts]


DEFAULT = Sampling()


@dataclasses.dataclass(frozen=True)
class FileGroup:
    """Files read together and hashed together in the manifest (a graph and its external data)."""

    what: str  # for messages: "model unet"
    files: tuple[str, ...]  # relative to the export folder
    sha256: str


def stamp(path: Path, sampling: Sampling = DEFAULT) -> str:
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset, length in sampling.ranges(size):
            f.seek(offset)
            h.update(f.read(length))
    return h.hexdigest()


def groups(manifest: Manifest) -> list[FileGroup]:
    """Every file the manifest records a sha256 for: models, tokenizer, and the later stages in `extra`."""
    out = [FileGroup(f"model {n}", (e.file, *e.data_files), e.sha256) for n, e in manifest.models.items()]
    out += [FileGroup("tokenizer file", (f"{TOKENIZER_DIR}/{f}",), s) for f, s in manifest.tokenizer_files.items()]
    for n, e in (manifest.extra.get("fp16_onnx") or {}).items():
        out.append(FileGroup(f"fp16 graph of {n}", (e["file"], *e.get("data_files", ())), e["sha256"]))
    for n, e in (manifest.extra.get("torchscript") or {}).items():
        out.append(FileGroup(f"TorchScript program {n}", (e["file"],), e["sha256"]))
    for e in (manifest.extra.get("ort_optimized") or {}).get("graphs", ()):
        out.append(FileGroup(f"ONNX Runtime-optimized graph {e['file']}", (e["file"], *e["data_files"]), e["sha256"]))
    for e in (manifest.extra.get("openvino_ir") or {}).get("graphs", ()):
        out.append(FileGroup(f"OpenVINO IR {e['file']}", (e["file"], *e["data_files"]), e["sha256"]))
    return out


def section(folder: Path, files: Iterable[str], checkpoint: Mapping[str, Any] | None = None,
            sampling: Sampling | None = None) -> dict[str, Any]:
    """The manifest.extra["integrity"] value: {file: {size, stamp}} for the export's files (and the checkpoint's)."""
    sampling = sampling or DEFAULT
    d: dict[str, Any] = {"schema": SECTION_SCHEMA, "sampling": dataclasses.asdict(sampling),
                         "files": stamps(folder, files, sampling)}
    if checkpoint is not None:
        d["checkpoint"] = dict(checkpoint)
    return d


def stamps(root: Path, files: Iterable[str], sampling: Sampling) -> dict[str, dict[str, Any]]:
    return {f: {"size": (root / f).stat().st_size, "stamp": stamp(root / f, sampling)} for f in sorted(set(files))}


def attach(folder: Path, manifest: Manifest, checkpoint: Mapping[str, Any] | None = None,
           sampling: Sampling | None = None) -> Manifest:
    """The manifest with a fresh integrity section over every file it names (call after the files are final)."""
    files = [f for g in groups(manifest) for f in g.files]
    d = section(folder, files, checkpoint, sampling)
    return dataclasses.replace(manifest, extra={**manifest.extra, SECTION: d})


def check_mode(verify: str) -> str:
    if verify not in MODES:
        raise ValueError(f"verify must be one of {MODES}, got {verify!r}")
    return verify


def check(folder: Path, manifest: Manifest, group: FileGroup, verify: str, fix: str = "") -> None:
    """`group`'s files are the ones exported: 'full' hashes every byte; 'fast' compares sizes and stamps.

    An export without stamps (made before they existed) gets the full check: slower, never weaker."""
    recorded = _recorded(manifest)
    if check_mode(verify) == "full" or recorded is None or any(f not in recorded[1] for f in group.files):
        check_files(folder, list(group.files), group.sha256, group.what, fix)
        return
    check_stamps(folder, group.what, group.files, recorded, fix or f"re-run `cyclediff-export` into {folder}")


def check_stamps(root: Path, what: str, files: Iterable[str], recorded: tuple[Sampling, Mapping[str, Any]],
                 fix: str) -> None:
    """Each file exists with its recorded size and stamp; else ManifestError saying which and how it differs."""
    sampling, table = recorded
    for rel in files:
        path, want = root / rel, table[rel]
        if not path.is_file():
            raise ManifestError(f"{what}: missing {path}; {fix}")
        size = path.stat().st_size
        if size != want["size"]:
            how = "truncated or partially written" if size < want["size"] else "longer than exported"
            raise ManifestError(f"{what}: {path} has {size} bytes, the export recorded {want['size']} ({how}); {fix}")
        if stamp(path, sampling) != want["stamp"]:
            raise ManifestError(f"{what}: {path} does not match its recorded stamp (sampled blocks differ: the "
                                f"file was changed or swapped for another); {fix}")


def checkpoint_stamps(ref: CheckpointRef, sampling: Sampling | None = None) -> dict[str, dict[str, Any]]:
    """Stamps of the files `checkpoint.content_hash` covers, keyed by the same relative paths."""
    root = _checkpoint_root(ref)
    return stamps(root, [str(p.relative_to(root)) for p in checkpoint._hashed_files(ref)], sampling or DEFAULT)


def check_checkpoint(ref: CheckpointRef, manifest: Manifest, verify: str, fix: str) -> None:
    """The torch backend's checkpoint is the exported one: 'full' re-hashes it (content_hash), 'fast' compares
    its file list, sizes and stamps. An export without checkpoint stamps gets the full check."""
    recorded = _recorded(manifest)
    table = (manifest.extra.get(SECTION) or {}).get("checkpoint")
    what = f"checkpoint {ref.path}"
    if check_mode(verify) == "full" or recorded is None or not isinstance(table, Mapping):
        if checkpoint.content_hash(ref) != manifest.checkpoint["content_hash"]:
            raise ManifestError(f"{what} changed since this export (content hash differs); {fix}")
        return
    root = _checkpoint_root(ref)
    files = {str(p.relative_to(root)) for p in checkpoint._hashed_files(ref)}
    if files != set(table):
        diff = sorted(files ^ set(table))
        raise ManifestError(f"{what} changed since this export (files added or removed: {', '.join(diff[:4])}); {fix}")
    check_stamps(root, f"{what} changed since this export", sorted(files), (recorded[0], table), fix)


def _checkpoint_root(ref: CheckpointRef) -> Path:
    return ref.path.parent if ref.kind == "file" else ref.path  # as checkpoint.content_hash names files


def _recorded(manifest: Manifest) -> tuple[Sampling, Mapping[str, Any]] | None:
    d = manifest.extra.get(SECTION)
    if not isinstance(d, Mapping) or d.get("schema") != SECTION_SCHEMA:
        return None  # an older export: callers fall back to the full sha256
    try:
        return Sampling(**d["sampling"]), d["files"]
    except (KeyError, TypeError) as err:
        raise ManifestError(f"manifest integrity section is malformed ({err!r}); re-run `cyclediff-export`") from err


def verify_all(folder: Path, manifest: Manifest) -> list[FileGroup]:
    """The full check (`cyclediff-export --verify`): sha256 of every recorded file; returns the groups checked."""
    checked = groups(manifest)
    for g in checked:
        check_files(folder, list(g.files), g.sha256, g.what)
    return checked


def for_fast_load(folder: Path, manifest: Manifest, ref: CheckpointRef, derived: bool = True) -> Manifest:
    """The export's last step before the manifest: ONNX Runtime-optimized graphs and OpenVINO IR (derived=False:
    neither, for a torch-only export), then stamps of every file."""
    from cyclediff.export import openvino_ir, ort_cache

    if derived:
        manifest = openvino_ir.attach(folder, ort_cache.attach(folder, manifest))
    return attach(folder, manifest, checkpoint_stamps(ref))  # DEFAULT sampling, looked up now (tests narrow it)
