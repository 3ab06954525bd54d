"""Output folders checked before any work: a read-only or misplaced --out is refused in one line at the start,
not as a raw `[Errno 30]` after the export or sweep has already run for a while."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class FolderNotWritable(ValueError):
    """An output folder that cannot be created or written; `.field` is the option that named it (e.g. --out).

    A ValueError, as every error the caller fixes by changing an argument: the CLIs print it as one line."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def check_writable(folder: str | Path, field: str = "--out") -> None:
    """`folder` (when it exists) or the nearest existing folder above it (where it would be created) really
    accepts a new entry: a folder is made there and removed at once. A real probe, not os.access: as root,
    os.access allows writes into chmod-protected folders, and only the file system knows it is read-only.
    field: the option (or argument) that named the folder, for the message."""
    folder = Path(folder)
    target = _nearest_existing(folder, field)
    if not target.is_dir():
        where = "" if target == folder.absolute() else f": {target} above it"
        raise FolderNotWritable(field, f"{field} {folder}{where} exists and is not a folder; choose a folder path "
                                       f"for {field}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cyclediff-probe.", dir=target))
    except OSError as err:
        where = "" if target == folder.absolute() else f" (in {target}, where it would be created)"
        raise FolderNotWritable(field, f"{field} {folder} is not writable: {err.strerror or err}{where}; choose a "
                                       f"folder you can write to for {field}") from err


def _nearest_existing(folder: Path, field: str) -> Path:
    """folder itself, or its nearest ancestor that exists (the current folder for a relative path's top)."""
    path = folder.absolute()
    try:
        while not path.exists():
            path = path.parent
    except OSError as err:  # e.g. a name longer than the file system allows: exists() raises, not answers
        raise FolderNotWritable(field, f"{field} {folder} cannot be a folder: {err.strerror or err}; choose "
                                       f"another path for {field}") from err
    return path
