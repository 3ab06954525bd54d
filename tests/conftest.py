"""Shared pytest fixtures. Sections: exports of the built-in checkpoints; (add new sections below, one each)."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# --- a private checkpoint cache --------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Built-in checkpoints go to a per-session cache unless CYCLEDIFF_CACHE is set (CI keeps one in the
    clone), so tests never read or write the user's ~/.cache."""
    if "CYCLEDIFF_CACHE" not in os.environ:
        os.environ["CYCLEDIFF_CACHE"] = str(tmp_path_factory.mktemp("cache"))


# --- exports of the built-in checkpoints ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Callable[[str], Path]:
    """exports(name) -> folder holding a finished export of built-in checkpoint `name` ('tiny', 'tiny-deep',
    'tiny-trailing'), made once per session. Shared: copy it (shutil.copytree) before changing anything."""
    from cyclediff.export.pipeline import export

    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            folder = tmp_path_factory.mktemp(f"export-{name}")
            export(name, folder, quiet=True)
            done[name] = folder
        return done[name]

    return get
