"""EngineWorker: runs a replica's Engine calls on its own threads, each with a timeout that stops the call."""
from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cyclediff.runtime.core.cancel import cancel_scope
from cyclediff.serve.errors import Cancelled, RequestTimeout


class CancelToken:
    """Set when a request times out or its client goes away; the Engine call checks it at every step."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self, *_: Any) -> None:
        """Usable as the Engine's decode `callback(step, timestep, latents)`: raises once cancelled."""
        if self._event.is_set():
            raise Cancelled("request cancelled")


class EngineWorker:
    """One Engine, called from `threads` threads at once (the Engine merges their UNet calls), with a bounded
    queue: at most `threads + max_waiting` requests admitted at once, the rest refused (see admit).
    Locking rule: every counter is read and written under self._lock only.
    Counters reported by /v1/info: admitted (running or waiting now), refused, in_flight (Engine calls running
    now), done, cancelled (calls stopped by their token)."""

    def __init__(self, engine, threads: int, max_waiting: int = 0, decoder=None):
        self.engine = engine
        self.decoder = decoder  # a second Engine that decodes requests asking decoder=true (or None)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="cyclediff-serve")
        self.capacity = threads + max_waiting
        self._lock = threading.Lock()
        self.counts = {"admitted": 0, "refused": 0, "in_flight": 0, "done": 0, "cancelled": 0}
        self.closed = False

    def admit(self) -> bool:
        """Takes a place in the replica's queue, or counts a refusal and returns False when all are taken.
        Each True must be paired with one release()."""
        with self._lock:
            full = self.counts["admitted"] >= self.capacity
            self.counts["refused" if full else "admitted"] += 1
            return not full

    def release(self) -> None:
        self._count("admitted", -1)

    async def run(self, job: Callable[[CancelToken], Any], timeout_s: float, token: CancelToken | None = None) -> Any:
        """job(token) on a worker thread. Past timeout_s: RequestTimeout, and the token stops the call at its
        next step (a job not started yet never starts). A cancelled request (client gone) stops it too, as does
        cancelling `token` (a job's, DELETE /v1/jobs/{id}): then Cancelled."""
        token = token or CancelToken()
        future = asyncio.get_running_loop().run_in_executor(self.pool, self._guarded, job, token)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            token.cancel()
            raise RequestTimeout(f"the request ran past its timeout of {timeout_s:g} s") from None
        except asyncio.CancelledError:
            token.cancel()
            raise

    def _guarded(self, job: Callable[[CancelToken], Any], token: CancelToken) -> Any:
        token.check()
        self._count("in_flight", 1)
        try:
            with cancel_scope(token.check):  # stops the call at its next model call, the encoder's included
                result = job(token)
        except Cancelled:
            self._count("cancelled", 1)
            raise
        finally:
            self._count("in_flight", -1)
        self._count("done", 1)
        return result

    def _count(self, key: str, delta: int) -> None:
        with self._lock:
            self.counts[key] += delta

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self.counts, "pid": os.getpid(), "rss_bytes": _rss_bytes()}

    def close(self) -> None:
        self.closed = True
        self.pool.shutdown(wait=False, cancel_futures=True)


def _rss_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
