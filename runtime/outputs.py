"""One call's output files, all or nothing: checked before any compute, staged under temporary names, then
renamed into place together; on any failure everything the call wrote (files and folders) is removed."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from cyclediff.export.atomic_files import NEW_FILE_MODE


class OutputError(ValueError):
    """An output location that cannot be written; the message names the user's path, never a temp file."""


def _temp_prefix(path: Path) -> str:
    # Cut: a name that fits the folder must still give a temp name that fits (and LatentCode.save stages its
    # own temp file beside ours).
    return f".{path.name[:100]}."


class OutputSet:
    """`check()` before the work, `stage(path, writer)` per file after it, then `commit()`; `discard()` undoes,
    and `with files:` discards on any exception out of the block.

    Not thread-safe: one OutputSet belongs to one call (a job of `--jobs` has its own)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = tuple(Path(p) for p in paths)
        self._staged: dict[Path, Path] = {}  # final path -> temp file beside it
        self._made_dirs: list[Path] = []  # folders this call created, outermost first
        self._committed: list[Path] = []

    def check(self) -> None:
        """Everything that can be known before computing: no folder named as a file, no two outputs on one
        file, and each folder (or the nearest existing ancestor that would hold it) really accepts a file named
        like our temp files. A real probe, not os.access: root passes os.access everywhere, and only the file
        system knows its own limits."""
        for path in self.paths:
            _check_names(path)  # first: a stat of an over-long name raises rather than answering
            if path.is_dir():
                raise OutputError(f"{path} is a folder; name a file to write")
            _probe(path)
        resolved = [p.resolve() for p in self.paths]
        if len(set(resolved)) != len(resolved):
            raise OutputError(f"output paths collide: {', '.join(map(str, self.paths))}")

    def stage(self, path: Path, writer: Callable[[Path], None]) -> None:
        """writer(tmp) writes the file's content to `tmp` (a fresh file in the final folder)."""
        path = Path(path)
        try:
            self._make_dirs(path.parent)
            fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
            os.close(fd)
            self._staged[path] = Path(tmp)
            writer(Path(tmp))
            os.chmod(tmp, NEW_FILE_MODE)  # mkstemp makes 0600; give the file what open() would
        except OSError as err:
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from err

    def commit(self) -> list[Path]:
        """Rename every staged file into place; after a failure midway, discard() removes the ones renamed."""
        try:
            for path, tmp in self._staged.items():
                os.replace(tmp, path)
                self._committed.append(path)
        except OSError as err:
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from err
        self._staged.clear()
        return list(self._committed)

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        """Leaving the block by any exception (KeyboardInterrupt too) discards what was written; it propagates."""
        if exc_type is not None:
            self.discard()
        return False

    def discard(self) -> None:
        """Remove every file and folder this call wrote. Safe to call at any point, and twice."""
        for path in [*self._staged.values(), *self._committed]:
            path.unlink(missing_ok=True)
        self._staged.clear()
        self._committed.clear()
        for folder in reversed(self._made_dirs):
            try:
                folder.rmdir()  # only if empty: another writer may have put something there meanwhile
            except OSError:
                pass
        self._made_dirs.clear()

    def _make_dirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for made in reversed(missing):
            made.mkdir(exist_ok=True)
            self._made_dirs.append(made)


def _check_names(path: Path) -> None:
    limit = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for part in path.absolute().parts:
        if len(part.encode()) > limit:
            raise OutputError(f"cannot write {path}: the name {part[:40]}... is longer than {limit} bytes")


def _probe(path: Path) -> None:
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} is not a folder")
    try:
        if folder == path.absolute().parent:  # the file's own folder: try a file named as our temp files
            fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)
            os.close(fd)
            os.unlink(tmp)
        else:  # folders to create: try creating one where the first would go
            os.rmdir(tempfile.mkdtemp(prefix=".cyclediff-probe.", dir=folder))
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err} (in {folder})") from err

