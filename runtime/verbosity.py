"""How loud the command-line tools are: one line per real problem by default, the libraries' chatter with --verbose.

The libraries underneath speak for themselves: ONNX Runtime logs every graph rewrite it could not make (~26
lines on an fp16 export), transformers repeats our own prompt-truncation warning, diffusers asks for
`accelerate`. None of it is something the user can act on, so by default only errors from them get through,
and cyclediff's own warnings print as one `PROG: warning: ...` line each.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

_ORT_WARNING, _ORT_ERROR = 2, 3  # onnxruntime's logger severities
_verbose = False  # the latest configure(); a library caller that never calls it gets the quiet default


def configure(prog: str, verbose: bool) -> None:
    """Call once, at the top of a CLI's main(), before any library does work."""
    global _verbose
    _verbose = bool(verbose)
    _own_messages(prog, logging.DEBUG if verbose else logging.WARNING)
    _libraries(verbose)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Around a load of the checkpoint's torch modules: transformers' and diffusers' own 'Loading weights' bars
    are hidden unless --verbose (a bar per model file, for a load of seconds, is noise beside the edit's own
    bars). Their warnings still follow configure(). Safe from several threads (export/progress.py)."""
    if _verbose:
        yield
        return
    from cyclediff.export.progress import quiet_libraries

    with quiet_libraries(quiet=False):
        yield


def _own_messages(prog: str, level: int) -> None:
    log = logging.getLogger("cyclediff")
    log.setLevel(level)
    for handler in [h for h in log.handlers if isinstance(h, _OneLine)]:
        log.removeHandler(handler)  # main() called again in one process: one handler, the latest prog
    log.addHandler(_OneLine(prog))
    # Records still propagate: the root logger has no handler in a CLI (so nothing prints twice), and pytest's
    # caplog listens there.


class _OneLine(logging.Handler):
    """`PROG: warning: text` on one line, through tqdm so that a running progress bar is redrawn below it; the
    current sys.stderr at each record (it may have been replaced since the handler was made)."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            text = " ".join(part.strip() for part in record.getMessage().splitlines() if part.strip())
            tqdm.write(f"{self.prog}: {record.levelname.lower()}: {text}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler reports, never raises
            self.handleError(record)


def _libraries(verbose: bool) -> None:
    try:
        import onnxruntime as ort

        ort.set_default_logger_severity(_ORT_WARNING if verbose else _ORT_ERROR)
    except ImportError:  # the torch backend alone needs no onnxruntime
        pass
    # Through their environment variables, read at import: importing diffusers here would cost seconds that
    # the onnxruntime backend never pays. A library already imported (main() called in-process) is set directly.
    level = "warning" if verbose else "error"
    for variable, module in (("TRANSFORMERS_VERBOSITY", "transformers.utils.logging"),
                             ("DIFFUSERS_VERBOSITY", "diffusers.utils.logging")):
        os.environ[variable] = level
        if module in sys.modules:
            lib = sys.modules[module]
            lib.set_verbosity(lib.WARNING if verbose else lib.ERROR)
