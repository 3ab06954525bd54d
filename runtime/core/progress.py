"""Progress bars of an Engine's calls: one bar per call, and at most one drawn at a time, so that calls made
from several threads at once never interleave their redraws on the terminal.

A bar opened while no other bar is drawn is drawn, exactly as a lone call's bar always was (tqdm, leave=False);
a bar opened while another one is drawn counts silently (a disabled tqdm: same methods, writes nothing).

Locking rule: `_lock` guards `_drawing`; only the bar that set it (under the lock, when it was False) writes to
the stream, and it clears it after its tqdm has closed (erased its line).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import IO

from tqdm.auto import tqdm


class ProgressBars:
    """enabled: False draws nothing (EngineConfig.progress). file: the stream (None: tqdm's default, stderr)."""

    def __init__(self, enabled: bool, file: IO[str] | None = None):
        self.enabled, self.file = enabled, file
        self._lock = threading.Lock()
        self._drawing = False

    @contextlib.contextmanager
    def bar(self, total: int, desc: str) -> Iterator[tqdm]:
        """A tqdm bar for one call's `total` steps; drawn only if no other bar is drawn now."""
        drawn = self.enabled and self._take()
        bar = tqdm(total=total, desc=desc, disable=not drawn, leave=False, file=self.file)
        try:
            yield bar
        finally:
            bar.close()
            if drawn:
                with self._lock:
                    self._drawing = False

    def _take(self) -> bool:
        with self._lock:
            if self._drawing:
                return False
            self._drawing = True
            return True
