"""The reference side of parity tests: diffusers' CycleDiffusionPipeline on the same checkpoint, quietly."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch


@functools.lru_cache(maxsize=4)
def pipeline(checkpoint_path: str):
    from diffusers import CycleDiffusionPipeline
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    pipe = CycleDiffusionPipeline.from_pretrained(checkpoint_path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    te = pipe.text_encoder
    if not hasattr(te, "text_model"):  # transformers 5 flattened CLIPTextModel; the reference's clip_skip needs it
        object.__setattr__(te, "text_model", te)  # a plain attribute, not a (recursive) submodule
    return pipe


def checkpoint_path(export_dir: Path) -> str:
    return json.loads((export_dir / "manifest.json").read_text())["checkpoint"]["path"]


def reference_edit(export_dir: Path, seed: int, **kw) -> np.ndarray:
    return pipeline(checkpoint_path(export_dir))(**kw, generator=torch.Generator().manual_seed(seed)).images


def sample_image(size: int, seed: int = 0) -> PIL.Image.Image:
    """A smooth random picture (random noise images make the VAE's job unlike real use)."""
    rng = np.random.RandomState(seed)
    small = rng.rand(4, 4, 3)
    big = np.kron(small, np.ones((size // 4 + 1, size // 4 + 1, 1)))[:size, :size]
    return PIL.Image.fromarray((big * 255).astype("uint8"))
