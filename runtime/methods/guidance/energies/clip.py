"""ClipEnergy: 1 − cos(CLIP image embedding of augmented x, CLIP text embedding), averaged over augmentations."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cyclediff.runtime.core.checks import check_number
from cyclediff.runtime.methods.guidance.clip_loader import LoadedClip
from cyclediff.runtime.methods.guidance.energies.augment import DiffAugment
from cyclediff.runtime.methods.guidance.energies.base import Energy

DEFAULT_AUGMENT = DiffAugment()  # colour, translation, resize, cutout (None: no augmentation)


class ClipEnergy(Energy):
    """The repo's CLIP energy: weight 500 and 50 augmented copies by default (each copy is one CLIP image pass
    per sample, so fewer copies are much cheaper). The text embedding is computed once, without gradient."""

    def __init__(self, clip: LoadedClip, text: str, weight: float = 500.0, n_aug: int = 50,
                 augment: DiffAugment | None = DEFAULT_AUGMENT, name: str = "clip"):
        super().__init__(weight)
        if not isinstance(clip, LoadedClip):
            raise TypeError(f"ClipEnergy: clip must come from load_clip(...), got {type(clip).__name__}")
        check_number("ClipEnergy: n_aug", n_aug, integer=True, low=1)
        if not isinstance(text, str) or not text.strip():
            raise ValueError("ClipEnergy: text must be a non-empty string")
        self.clip, self.text, self.n_aug, self.augment, self.name = clip, text, n_aug, augment, name
        self.target = self._text_features(text)  # (1, P), unit length

    def _text_features(self, text: str) -> torch.Tensor:
        tok = self.clip.tokenizer([text], padding="max_length", truncation=True, return_tensors="pt")
        device = next(self.clip.model.parameters()).device
        with torch.no_grad():
            out = self.clip.model.get_text_features(input_ids=tok["input_ids"].to(device),
                                                    attention_mask=tok["attention_mask"].to(device))
        return F.normalize(_pooled(out), dim=-1)

    def __call__(self, x: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> (B,) mean over n_aug copies of 1 − cos."""
        b = x.shape[0]
        copies = ((x + 1) / 2).repeat(self.n_aug, 1, 1, 1)  # (n_aug·B, 3, H, W) in [0, 1], copy-major
        if self.augment is not None:
            copies = self.augment(copies, rng)
        feats = F.normalize(_pooled(self.clip.model.get_image_features(pixel_values=self._pixels(copies))), dim=-1)
        cos = (feats * self.target.to(feats.dtype)).sum(-1).view(self.n_aug, b)
        return (1 - cos).mean(0)

    def _pixels(self, x: torch.Tensor) -> torch.Tensor:
        """CLIP's input: resized to its side, normalised with its mean/std."""
        s = self.clip.image_size
        x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        mean = torch.tensor(self.clip.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.clip.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
