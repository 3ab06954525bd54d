"""Per-call working memory: each in-flight Engine call borrows one BufferPool, so concurrent calls never
share a step buffer, and a pool's buffers are reused by the calls that borrow it later.

Locking rule: `_cond` guards the free list and the count; a borrowed pool belongs to its borrower alone.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.checks import check_number


class Workspaces:
    """At most `limit` pools exist; a call that finds none free waits for one (this bounds memory)."""

    def __init__(self, device: torch.device, limit: int):
        check_number("max_concurrency", limit, integer=True, low=1)
        self.device, self.limit = device, limit
        self._cond = threading.Condition()
        self._free: list[BufferPool] = []
        self._all: list[BufferPool] = []

    @contextlib.contextmanager
    def borrow(self) -> Iterator[BufferPool]:
        pool = self._take()
        try:
            yield pool
        finally:
            with self._cond:
                self._free.append(pool)
                self._cond.notify()

    def _take(self) -> BufferPool:
        with self._cond:
            while not self._free and len(self._all) >= self.limit:
                self._cond.wait()
            if self._free:
                return self._free.pop()
            pool = BufferPool(self.device)
            self._all.append(pool)
            return pool

    @property
    def allocations(self) -> int:
        with self._cond:
            return sum(p.allocations for p in self._all)

    def nbytes(self) -> int:
        with self._cond:
            pools = list(self._all)
        return sum(p.nbytes() for p in pools)

    def report(self) -> dict[str, int]:
        """Bytes per buffer name, summed over every pool (a snapshot: pools in use may be growing)."""
        out: dict[str, int] = {}
        with self._cond:
            pools = list(self._all)
        for pool in pools:
            for name, size in pool.report().items():
                out[name] = out.get(name, 0) + size
        return out
