"""A built-in random-weight CLIP (`--clip tiny`) in openai/clip-vit-base-patch32's folder layout, for offline
tests and the README example. Its scores carry no meaning; the code paths are the real model's."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

# Small sizes of every part the real model has (vision ViT with patches, text transformer, projections).
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "max_position_embeddings": 77}
PROJECTION_DIM = 16
VERSION = "1"  # bump when the sizes above change: the cache folder is keyed by it


def tiny_clip_folder() -> Path:
    """The built-in CLIP's folder under $CYCLEDIFF_CACHE, built once (atomically: a temp folder renamed)."""
    from cyclediff.export.tiny import cache_root

    folder = cache_root() / "tiny-clip" / f"v{VERSION}"
    if not (folder / "config.json").is_file():
        partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        write_tiny_clip(partial)
        try:
            os.replace(partial, folder)
        except OSError:  # another process finished first: keep its copy
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Write config, seeded random weights, tokenizer (learned on the fly) and image-processor files to folder."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from cyclediff.export.tokenizer_files import write_tokenizer

    write_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(folder)
    special = {"vocab_size": len(tok), "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id,
               "pad_token_id": tok.pad_token_id}
    config = CLIPConfig(text_config={**TEXT, **special}, vision_config=VISION, projection_dim=PROJECTION_DIM)
    torch.manual_seed(seed)
    side = VISION["image_size"]
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": side},
                                                 crop_size={"height": side, "width": side}), tok)
    from cyclediff.eval.clip_model import _quiet_transformers

    with _quiet_transformers():
        CLIPModel(config).eval().save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder
