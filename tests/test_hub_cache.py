"""A hub id missing from the local Hugging Face cache (nothing is downloaded): one line saying what was looked
for, where, and how to get it."""
from __future__ import annotations

import pytest


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """An empty hub cache: where huggingface_hub looks, and what the message must name."""
    from huggingface_hub import constants

    folder = tmp_path / "hub-cache"
    folder.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return folder


def test_a_missing_model_is_one_line_with_what_where_and_the_fix(empty_cache):
    from cyclediff.export.hub_cache import model_folder

    with pytest.raises(ValueError) as err:
        model_folder("nobody/no-clip", "CLIP model", "run `hf download nobody/no-clip` on a machine with internet",
                     ValueError)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"CLIP model nobody/no-clip is not in the local Hugging Face cache ({empty_cache};")
    assert text.endswith("; run `hf download nobody/no-clip` on a machine with internet")


def test_a_missing_hub_checkpoint_is_one_line_too(empty_cache):
    from cyclediff.export.checkpoint import CheckpointError, resolve

    with pytest.raises(CheckpointError) as err:
        resolve("CompVis/stable-diffusion-v1-4")
    text = str(err.value)
    assert "\n" not in text and str(empty_cache) in text and "hf download CompVis/stable-diffusion-v1-4" in text
    assert "--ckpt" in text
