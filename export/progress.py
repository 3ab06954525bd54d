"""One progress bar over the export's named steps; silent (bar, library bars and messages) when quiet."""
from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator

from tqdm.auto import tqdm


class Progress:
    """`with progress.step("export unet"): ...` advances one step; `write` prints above the bar."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.quiet = quiet
        # disable=None: no bar when stderr is not a terminal (logs, pipes); the messages still print.
        self._bar = tqdm(total=total, disable=True if quiet else None, unit="step", dynamic_ncols=True,
                         bar_format="{desc:<28} {bar} {n_fmt}/{total_fmt} [{elapsed}]")

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        self._bar.set_description_str(label)
        yield
        self._bar.update(1)

    def skip(self, steps: int, label: str) -> None:
        """Count steps that had nothing to do (a reused model)."""
        self._bar.set_description_str(label)
        self._bar.update(steps)

    def add(self, steps: int) -> None:
        """Grow the total (a fallback exporter adds an export and a verify step)."""
        self._bar.total += steps
        self._bar.refresh()

    def write(self, message: str) -> None:
        if not self.quiet:
            tqdm.write(message)

    def close(self, ok: bool = True) -> None:
        """On failure the bar is erased, so that the error message starts its own clean line."""
        self._bar.leave = ok
        self._bar.close()


LIBRARIES = ("transformers.utils.logging", "diffusers.utils.logging")
_LOCK = threading.Lock()
_HELD: dict[str, list] = {}  # library -> [blocks inside, bars were on, verbosity before]: the state to restore


@contextlib.contextmanager
def quiet_libraries(quiet: bool, libraries: tuple[str, ...] = LIBRARIES) -> Iterator[None]:
    """transformers/diffusers draw their own 'Loading weights' bars (one bar is enough) and, unless quiet,
    keep their warnings; everything is restored when the last block inside ends.

    Their switches are process-wide, so blocks that overlap (two threads loading at once) share them: the
    first saves the state, the last restores it; a block never turns bars back on under another one.
    libraries: the logging modules to quiet (transformers alone spares the seconds of importing diffusers)."""
    libs = [importlib.import_module(name) for name in libraries]
    with _LOCK:
        for name, lib in zip(libraries, libs):
            _enter(name, lib, quiet)
    try:
        yield
    finally:
        with _LOCK:
            for name, lib in zip(libraries, libs):
                _leave(name, lib)


def _enter(name: str, lib, quiet: bool) -> None:
    held = _HELD.setdefault(name, [0, lib.is_progress_bar_enabled(), lib.get_verbosity()])
    held[0] += 1
    lib.disable_progress_bar()
    if quiet:
        lib.set_verbosity_error()


def _leave(name: str, lib) -> None:
    held = _HELD[name]
    held[0] -= 1
    if held[0] == 0:
        del _HELD[name]
        lib.set_verbosity(held[2])
        if held[1]:
            lib.enable_progress_bar()
