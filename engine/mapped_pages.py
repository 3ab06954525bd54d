"""Resident pages of memory-mapped weight files: find a file's read-only mappings in this process and drop them.

OpenVINO memory-maps an IR's weights; compiling reads them all and packs them into the plugin's own buffers, after
which the mapping is never read again, yet it stays resident (RssFile 3.3 GB for the SD UNet, on top of its 1.7 GB
of packed bf16 weights). madvise(MADV_DONTNEED) on a read-only file mapping drops the pages from this process: a
page read again faults back in from the file, unchanged, and the kernel's page cache keeps it outside our RSS.
"""
from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

_MADV_DONTNEED = 4


def weight_files(graph: Path) -> list[Path]:
    """The files a graph's weights are mapped from: an IR's .bin, or an ONNX graph's external data."""
    if graph.suffix == ".xml":
        return [graph.with_suffix(".bin")]
    return [*graph.parent.glob(graph.name + "*.data"), graph]


class PageDropper:
    """While the block runs (and once at its end), drop the resident pages of `files`' read-only mappings every
    `period` seconds, so that the process never holds a whole mapped weight file at once."""

    def __init__(self, files: Iterable[Path], period: float = 0.1):
        self.files, self.period = list(files), period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cyclediff-page-dropper", daemon=True)

    def __enter__(self) -> PageDropper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        drop_file_pages(self.files)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            drop_file_pages(self.files)


def drop_file_pages(files: Iterable[Path]) -> int:
    """Drop this process's resident pages of read-only mappings of `files`; returns the bytes of the ranges.

    Only mappings without write permission are touched: their pages are the file's. Linux only; elsewhere
    nothing is done."""
    if not sys.platform.startswith("linux"):
        return 0
    names = {str(Path(f).resolve()) for f in files}
    ranges = [(start, end) for start, end, path, perms in _mappings() if path in names and "w" not in perms]
    if not ranges:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return sum(end - start for start, end in ranges if libc.madvise(start, end - start, _MADV_DONTNEED) == 0)


def _mappings() -> list[tuple[int, int, str, str]]:
    """(start, end, path, permissions) of every file mapping in /proc/self/maps."""
    out = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    start, end = (int(v, 16) for v in parts[0].split("-"))
                    out.append((start, end, parts[5].rstrip("\n"), parts[1]))
    except OSError:
        return []
    return out
