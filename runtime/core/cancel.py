"""cancel_scope: a check that every model call of the calling thread runs first, so that a caller can stop an
Engine call between any two model calls (the encoder's UNet chunks, the decoder's steps, the VAE), not only
at the decoder's step callback.

Locking rule: the check lives in a threading.local, so it is read and written only by the thread it belongs to;
calls made by other threads on the same Engine never see it."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

_local = threading.local()


class Cancelled(Exception):
    """A call stopped by its caller before it finished (a cancel check raised it, or the caller stopped waiting
    for it): nothing it would have written was written. The one cancellation error of the project."""


@contextlib.contextmanager
def cancel_scope(check: Callable[[], None]) -> Iterator[None]:
    """Within the block, every model call this thread makes first calls check(); what it raises stops the
    Engine call there and reaches the caller (the Engine stays usable). Scopes nest: the inner check wins."""
    previous = getattr(_local, "check", None)
    _local.check = check
    try:
        yield
    finally:
        _local.check = previous


def current_check() -> Callable[[], None] | None:
    """The calling thread's check, if any: to carry it to a thread that works for this one (autograd's backward
    thread on CUDA, which has no scope of its own)."""
    return getattr(_local, "check", None)


def check_cancelled() -> None:
    """Run the calling thread's check, if it has one (the dispatcher calls this before every model call)."""
    check = getattr(_local, "check", None)
    if check is not None:
        check()
