"""One progress bar over the export's named steps; silent (bar, library bars and messages) when quiet."""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def quiet_libraries(quiet: bool) -> Iterator[None]:
    """transformers/diffusers draw their own 'Loading weights' bars (one bar is enough) and, unless quiet,
    keep their warnings; everything is restored afterwards."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    saved = [(lib, lib.is_progress_bar_enabled(), lib.get_verbosity()) for lib in (tlog, dlog)]
    for lib, _, _ in saved:
        lib.disable_progress_bar()
        if quiet:
            lib.set_verbosity_error()
    try:
        yield
    finally:
        for lib, bars, verbosity in saved:
            lib.set_verbosity(verbosity)
            if bars:
                lib.enable_progress_bar()
