"""CLIP embeddings for the metrics, from a local folder, the local Hugging Face cache, or the built-in `tiny`."""
from __future__ import annotations

import threading
from pathlib import Path

import torch

PAPER_MODEL = "openai/clip-vit-base-patch32"  # CLIP ViT-B/32, the paper's


class ClipError(ValueError):
    """The CLIP model cannot be found or read; the message names the fix."""


def resolve_clip(spec: str) -> Path:
    """'tiny' -> the built-in folder; an existing folder -> itself; 'owner/name' -> its local HF cache snapshot."""
    if spec == "tiny":
        from cyclediff.eval.tiny_clip import tiny_clip_folder

        return tiny_clip_folder()
    from cyclediff.export.hub_cache import model_folder

    hub = spec if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) else PAPER_MODEL
    return model_folder(spec, "--clip", f"on a machine with internet run `hf download {hub}` (huggingface_hub's "
                        f"CLI) and copy the cache here, or pass a Hugging Face CLIP folder (the layout of "
                        f"{PAPER_MODEL}) with --clip DIR (--clip tiny: a random built-in one)", ClipError)


class ClipEmbedder:
    """A CLIP model and its processor. embed_images / embed_texts return raw (unnormalized) projections (N, D).
    Calls are serialized by a lock: the processor and model are not documented as thread-safe."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        with _quiet_transformers():
            try:
                self.model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().to(device)
                self.processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
            except (OSError, ValueError) as err:
                raise ClipError(f"{folder} is not a readable Hugging Face CLIP folder ({err})") from err
        self.device = torch.device(device)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, spec: str, device: str = "cpu") -> ClipEmbedder:
        return cls(resolve_clip(spec), device)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) on [0, 1] -> (N, D). Pixels go to the processor as 0..255 values, as PNGs would."""
        pixels = [(img.clamp(0, 1) * 255).round().to(torch.uint8).cpu() for img in images]
        with self._lock, _quiet_transformers():
            batch = self.processor(images=pixels, return_tensors="pt")
            return _features(self.model.get_image_features(batch["pixel_values"].to(self.device))).float().cpu()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """texts -> (N, D); prompts longer than CLIP's 77 tokens are truncated, as every CLIP score does."""
        with self._lock:
            batch = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
            feats = self.model.get_text_features(batch["input_ids"].to(self.device),
                                                 batch["attention_mask"].to(self.device))
            return _features(feats).float().cpu()


def _features(out) -> torch.Tensor:
    """transformers < 5 returns the projected tensor; >= 5 an output object holding it in pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _quiet_transformers():
    """Hide transformers' load-time notes and progress bars (e.g. the torchvision fallback note); restored after
    the last overlapping block (export/progress.py). diffusers is left alone: importing it costs seconds."""
    from cyclediff.export.progress import quiet_libraries

    return quiet_libraries(quiet=True, libraries=("transformers.utils.logging",))
