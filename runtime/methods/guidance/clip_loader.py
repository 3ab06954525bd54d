"""Load a CLIP model (openai/clip-vit-base-patch32 layout) from a local folder, the Hugging Face cache or the
built-in `tiny` (cyclediff-eval's: evaluation/tiny_clip.py), offline."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from cyclediff.runtime.methods.guidance.config import GuidanceError

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
TINY = "tiny"  # the built-in random-weight CLIP, as `cyclediff-eval --clip tiny`
# OpenAI CLIP's normalisation (transformers' OPENAI_CLIP_MEAN/STD), used when the folder has no preprocessor config
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class LoadedClip:
    """model: transformers CLIPModel (eval, no parameter gradients); tokenizer: its CLIPTokenizer."""

    model: torch.nn.Module
    tokenizer: object
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_clip(source: str | Path = DEFAULT_CLIP, device: str | torch.device = "cpu") -> LoadedClip:
    """source: a folder with config.json, weights and tokenizer files, a hub id already in the local cache, or
    'tiny' (a random built-in CLIP: the code paths of the real one, scores without meaning)."""
    from transformers import CLIPModel, CLIPTokenizer

    from cyclediff.runtime import verbosity

    folder = resolve(source)
    try:
        with verbosity.quiet_loading():  # no 'Loading weights' bar unless --verbose
            model = CLIPModel.from_pretrained(folder, torch_dtype=torch.float32).eval().to(device)
            tokenizer = CLIPTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise GuidanceError(f"CLIP folder {folder} could not be loaded ({err}); {_how_to_get(str(source))}") from err
    model.requires_grad_(False)  # gradients flow to the image, never into CLIP's weights
    mean, std = _normalisation(folder)
    return LoadedClip(model, tokenizer, int(model.config.vision_config.image_size), mean, std)


def resolve(source: str | Path) -> Path:
    """The local folder for `source`, or a GuidanceError saying how to get it."""
    if str(source) == TINY:  # eval's resolver builds it once under $CYCLEDIFF_CACHE
        from cyclediff.eval.clip_model import resolve_clip

        return resolve_clip(TINY)
    from cyclediff.export.hub_cache import model_folder

    return model_folder(source, "CLIP model", _how_to_get(str(source)), GuidanceError)


def _how_to_get(source: str) -> str:
    hub = source if source.count("/") == 1 and not source.startswith((".", "/", "~")) else DEFAULT_CLIP
    return (f"on a machine with internet run `hf download {hub}` (huggingface_hub's CLI) and copy the cache "
            f"here, or pass a local folder in the {DEFAULT_CLIP} layout (config.json, model.safetensors, "
            f"vocab.json, merges.txt) ('{TINY}': a random built-in one, for trying it offline)")


def _normalisation(folder: Path) -> tuple[tuple, tuple]:
    cfg = folder / "preprocessor_config.json"
    if cfg.is_file():
        d = json.loads(cfg.read_text())
        return tuple(d.get("image_mean", OPENAI_MEAN)), tuple(d.get("image_std", OPENAI_STD))
    return OPENAI_MEAN, OPENAI_STD
