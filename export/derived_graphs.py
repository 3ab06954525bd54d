"""What the export's derived-graph sections share (ort_cache.py: DIR/ort/, openvino_ir.py: DIR/openvino/): a
manifest.extra section {"schema": N, "graphs": [entry, ...]}, each entry naming its file, data files and sha256."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cyclediff.export.manifest import Manifest, sha256_files


def entries(manifest: Manifest, section: str, schema: int) -> list[dict[str, Any]]:
    """The section's entries; none for a missing section or another cyclediff's schema."""
    d = manifest.extra.get(section)
    if not isinstance(d, Mapping) or d.get("schema") != schema:
        return []
    return [e for e in d.get("graphs", ()) if isinstance(e, Mapping)]


def intact(folder: Path, entry: Mapping[str, Any]) -> bool:
    """The entry's files exist and hash to its recorded sha256."""
    paths = [folder / f for f in (entry["file"], *entry["data_files"])]
    return all(p.is_file() for p in paths) and sha256_files(paths) == entry["sha256"]


def prune(folder: Path, sub: str, keep: set[str]) -> None:
    """Remove the files of DIR/<sub>/ whose 'sub/name' is not in keep."""
    if (folder / sub).is_dir():
        for p in (folder / sub).iterdir():
            if p.is_file() and f"{sub}/{p.name}" not in keep:
                p.unlink()
