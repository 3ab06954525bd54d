"""Simulate a read-only --out for the CLIs' writability checks (export/writable.py): as root, chmod does not stop
writes and a read-only bind needs privileges, so the probe's mkdtemp fails as on a read-only mount instead."""
from __future__ import annotations

import errno


def read_only(monkeypatch, module, work: str, what: str) -> None:
    """Every folder probe fails with EROFS; module.work (the first real work) fails the test if it still runs."""
    from cyclediff.export import writable

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    def no_work(*args, **kwargs):
        raise AssertionError(f"{what} before --out was checked")

    monkeypatch.setattr(writable.tempfile, "mkdtemp", refuse)
    monkeypatch.setattr(module, work, no_work)
