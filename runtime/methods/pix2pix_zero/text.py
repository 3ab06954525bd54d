"""The caption and negative prompt of a Pix2Pix-Zero call -> the (g, 77, D) embeddings its UNet calls take."""
from __future__ import annotations

import torch

from cyclediff.runtime.core.prompts import PromptEncoder


def one_prompt(prompt, prompt_embeds, text_shape: tuple[int, int], name: str = "prompt") -> None:
    """Exactly one of prompt (a string, or a list of one) and prompt_embeds (1, 77, D); one image per call."""
    if prompt is not None and prompt_embeds is not None:
        raise ValueError(f"pass either {name} or {name}_embeds, not both")
    if prompt is None and prompt_embeds is None:
        raise ValueError(f"pass {name} (the image's caption) or {name}_embeds")
    if prompt is not None:
        items = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(items, (list, tuple)) or len(items) != 1 or not isinstance(items[0], str):
            raise ValueError(f"{name} must be one string (Pix2Pix-Zero edits one image per call), got {prompt!r}")
    elif not isinstance(prompt_embeds, torch.Tensor) or tuple(prompt_embeds.shape) != (1, *text_shape):
        shape = tuple(prompt_embeds.shape) if isinstance(prompt_embeds, torch.Tensor) else type(prompt_embeds)
        raise ValueError(f"{name}_embeds must be a (1, {text_shape[0]}, {text_shape[1]}) tensor, got {shape}")


def embeddings(prompts: PromptEncoder, prompt, prompt_embeds, negative_prompt, negative_prompt_embeds,
               guided: bool, clip_skip: int | None, device: torch.device) -> torch.Tensor:
    """(2, 77, D) rows [negative, caption] when guided, else (1, 77, D) [caption]. The negative text is
    never clip-skipped, as in diffusers' encode_prompt; it defaults to ""."""
    if prompt_embeds is not None:
        cond = prompt_embeds.to(device, torch.float32)
    else:
        cond = prompts.encode([prompt if isinstance(prompt, str) else prompt[0]], clip_skip)
    if not guided:
        return cond
    if negative_prompt_embeds is not None:
        one_prompt(None, negative_prompt_embeds, tuple(cond.shape[1:]), "negative_prompt")
        neg = negative_prompt_embeds.to(device, torch.float32)
    else:
        negative = "" if negative_prompt is None else negative_prompt
        one_prompt(negative, None, tuple(cond.shape[1:]), "negative_prompt")
        neg = prompts.encode([negative if isinstance(negative, str) else negative[0]])
    return torch.cat([neg, cond])
