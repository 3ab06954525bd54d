"""Loads are quiet: transformers' and diffusers' own 'Loading weights' bars stay hidden unless --verbose, and the
switch that hides them (process-wide in those libraries) is restored once, by the last of overlapping loads."""
from __future__ import annotations

import pytest

from cyclediff import Engine
from cyclediff.export.progress import quiet_libraries
from cyclediff.runtime import verbosity

TRANSFORMERS = ("transformers.utils.logging",)


@pytest.fixture
def bars_on():
    """transformers' bars enabled for the test (an earlier --quiet CLI in this process may have turned them
    off), and the previous state back afterwards."""
    from transformers.utils import logging as tlog

    was, level = tlog.is_progress_bar_enabled(), tlog.get_verbosity()
    tlog.enable_progress_bar()
    yield tlog
    tlog.set_verbosity(level)
    (tlog.enable_progress_bar if was else tlog.disable_progress_bar)()


def test_overlapping_blocks_restore_the_libraries_once(bars_on):
    """Two loads at once (two threads), the first ending first: the order that left bars off for good, or turned
    them on under the second load, when each block saved and restored on its own."""
    first, second = quiet_libraries(False, TRANSFORMERS), quiet_libraries(True, TRANSFORMERS)
    level = bars_on.get_verbosity()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not bars_on.is_progress_bar_enabled()  # the second load is still running
    assert bars_on.get_verbosity() == bars_on.ERROR
    second.__exit__(None, None, None)
    assert bars_on.is_progress_bar_enabled() and bars_on.get_verbosity() == level


def test_a_failing_block_restores_too(bars_on):
    with pytest.raises(RuntimeError, match="load failed"):
        with quiet_libraries(True, TRANSFORMERS):
            raise RuntimeError("load failed")
    assert bars_on.is_progress_bar_enabled()


@pytest.mark.parametrize("verbose", [False, True])
def test_the_torch_backend_loads_without_library_bars_unless_verbose(verbose, exports, bars_on, capsys):
    verbosity.configure("test", verbose)
    try:
        Engine.load(exports("tiny"), backend="torch", progress=False)
    finally:
        verbosity.configure("test", False)  # leave the process quiet for the other tests
    err = capsys.readouterr().err
    assert ("Loading weights" in err) == verbose, err
    assert bars_on.is_progress_bar_enabled()  # restored after the load
