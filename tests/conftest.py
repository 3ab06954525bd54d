"""Shared pytest fixtures. Sections: exports of the built-in checkpoints; (add new sections below, one each)."""
from __future__ import annotations

import json
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


# --- a second export in tiny's latent space (translation between two models) ---------------------------------


@pytest.fixture(scope="session")
def finetune(tmp_path_factory, exports):
    """Export B: tiny with every UNet weight moved (a UNet-only fine-tune); text encoder, VAE, tokenizer, scheduler
    are tiny's own files."""
    import shutil

    import torch
    from diffusers import UNet2DConditionModel

    from cyclediff.export.pipeline import export

    ckpt = tmp_path_factory.mktemp("finetune") / "tiny-finetune"
    shutil.copytree(json.loads((exports("tiny") / "manifest.json").read_text())["checkpoint"]["path"], ckpt)
    unet = UNet2DConditionModel.from_pretrained(ckpt / "unet", low_cpu_mem_usage=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    unet.save_pretrained(ckpt / "unet")
    folder = tmp_path_factory.mktemp("export-finetune")
    export(str(ckpt), folder, quiet=True)
    return folder


# --- a random-weight CLIP model folder (openai/clip-vit-base-patch32 layout, tiny sizes) -----------------------


@pytest.fixture(scope="session")
def random_clip(tmp_path_factory) -> Path:
    """A folder CLIPModel/CLIPTokenizer.from_pretrained read: tiny random CLIP (32 px images) + a BPE tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from cyclediff.export.tokenizer_files import write_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    write_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
            "vocab_size": len(tok), "max_position_embeddings": 77, "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
              "image_size": 32, "patch_size": 8}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    return folder
