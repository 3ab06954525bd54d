"""Optional captions from a local BLIP captioning model folder (transformers), as diffusers' generate_caption."""
from __future__ import annotations

from pathlib import Path

PREFIX = "a photography of"  # the text diffusers' Pix2Pix-Zero pipeline starts every caption with


class CaptionError(ValueError):
    """A captioning model folder that cannot be used; the message says what to pass instead."""


def load(folder: str | Path):
    """(model, processor) from a local folder holding a BlipForConditionalGeneration and its BlipProcessor
    (e.g. a downloaded Salesforce/blip-image-captioning-base). Never downloads."""
    from transformers import BlipForConditionalGeneration, BlipProcessor

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CaptionError(f"--caption-model {folder}: no config.json there; pass a local BLIP captioning model "
                           "folder (e.g. `hf download Salesforce/blip-image-captioning-base --local-dir DIR`), or "
                           "give the caption with --caption")
    try:
        processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
        model = BlipForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError) as err:
        raise CaptionError(f"--caption-model {folder}: not a BLIP captioning model ({err})") from err
    return model, processor


def caption(model, processor, image, max_new_tokens: int = 128) -> str:
    """One caption of a PIL image: BLIP generation prompted with PREFIX, special tokens dropped."""
    import torch

    inputs = processor(image, PREFIX, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens)
    return processor.batch_decode(out, skip_special_tokens=True)[0].strip()
