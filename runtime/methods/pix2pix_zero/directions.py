"""Edit directions: sentence banks (caller's list, a file, or built-in templates) -> mean CLIP embeddings."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

# Sentences around a word, in the spirit of the paper's language-model sentence banks, so that a direction
# needs no model download. `{}` is the word.
TEMPLATES = (
    "a photo of a {}.", "a picture of a {}.", "an image of a {}.", "a close-up photo of a {}.",
    "a photo of the {}.", "a bright photo of a {}.", "a dark photo of a {}.", "a cropped photo of a {}.",
    "a good photo of a {}.", "a photo of one {}.", "a photo of a small {}.", "a photo of a large {}.",
    "a painting of a {}.", "a drawing of a {}.", "a rendering of a {}.", "a blurry photo of a {}.",
    "a {} in the scene.", "a {} in the picture.", "there is a {} in the image.", "a beautiful {}.",
)
ENCODE_BATCH = 16  # sentences per text-encoder call, as diffusers' get_embeds


class DirectionError(ValueError):
    """Sentences or embeddings that cannot make an edit direction; the message says why."""


@dataclasses.dataclass(frozen=True)
class EditDirection:
    """source_embeds, target_embeds: (1, 77, D) mean embeddings (diffusers' `get_embeds`, the arguments of its
    `__call__`). `direction` = target − source, added to the conditional prompt embedding of an edit."""

    source_embeds: torch.Tensor
    target_embeds: torch.Tensor

    @property
    def direction(self) -> torch.Tensor:
        return construct_direction(self.source_embeds, self.target_embeds)


def templated(word: str) -> list[str]:
    """The built-in sentences around `word` (e.g. 'cat' -> 'a photo of a cat.', …)."""
    if not isinstance(word, str) or not word.strip():
        raise DirectionError(f"the word must be a non-empty string, got {word!r}")
    return [t.format(word.strip()) for t in TEMPLATES]


def read_sentences(path: str | Path) -> list[str]:
    """One sentence per non-empty line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DirectionError(f"cannot read sentences from {path}: {err.strerror or err}") from err
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise DirectionError(f"{path} has no sentences; write one sentence per line")
    return sentences


def mean_embeds(sentences: list[str], encode: Callable[[list[str]], torch.Tensor], side: str) -> torch.Tensor:
    """(1, 77, D): the mean over sentences of encode(chunk) (each (n, 77, D)), as diffusers' get_embeds."""
    if isinstance(sentences, str) or not isinstance(sentences, (list, tuple)):
        raise DirectionError(f"{side}_sentences must be a list of strings, got {type(sentences).__name__}")
    if not sentences:
        raise DirectionError(f"{side}_sentences is empty; pass at least one sentence (or a word for the templates)")
    if not all(isinstance(s, str) for s in sentences):
        raise DirectionError(f"{side}_sentences must hold only strings")
    chunks = [encode(list(sentences[i: i + ENCODE_BATCH])) for i in range(0, len(sentences), ENCODE_BATCH)]
    return torch.cat(chunks, dim=0).mean(0)[None]


def construct_direction(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1, 77, D) = mean(target) − mean(source) over dim 0, as diffusers' construct_direction."""
    return (target.mean(0) - source.mean(0)).unsqueeze(0)


def check_embeds(source, target, text_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both (n, 77, D) float tensors of this text encoder's shape; returns them as float32."""
    checked = []
    for side, emb in (("source_embeds", source), ("target_embeds", target)):
        if emb is None:
            raise DirectionError(f"{side} is missing; pass both source_embeds and target_embeds (from "
                                 "Engine.edit_direction or your own (1, 77, D) mean embeddings)")
        if not isinstance(emb, torch.Tensor) or not emb.is_floating_point():
            raise DirectionError(f"{side} must be a float torch.Tensor, got {type(emb).__name__}")
        if emb.ndim != 3 or emb.shape[0] < 1 or tuple(emb.shape[1:]) != text_shape:
            raise DirectionError(f"{side} has shape {tuple(emb.shape)}; this engine's text encoder gives "
                                 f"(n, {text_shape[0]}, {text_shape[1]}) — make it with this engine's "
                                 "edit_direction")
        checked.append(emb.float())
    return checked[0], checked[1]
