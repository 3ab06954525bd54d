"""How a call's prompts, images and num_images_per_prompt expand into B items (the reference's batch fix)."""
from __future__ import annotations

import dataclasses

import torch

from cyclediff.runtime.core.checks import check_number


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Item k of B = n·num_images_per_prompt belongs to base entry k // num_images_per_prompt.

    Each of prompts, source prompts and images is given once (broadcast) or n times. Item k then
    equals the single edit of its base entry made with generator k, which diffusers' CFG batching breaks.
    """

    target_prompts: tuple[str, ...] | None  # (B,), None when prompt_embeds are given
    source_prompts: tuple[str, ...]  # (B,)
    image_index: tuple[int, ...]  # (B,) row of the preprocessed image batch
    embeds_index: tuple[int, ...] | None  # (B,) row of prompt_embeds

    @property
    def batch(self) -> int:
        return len(self.source_prompts)

    @classmethod
    def make(cls, prompt, source_prompt, num_images: int, num_images_per_prompt: int,
             prompt_embeds: torch.Tensor | None = None) -> "BatchPlan":
        nipp = num_images_per_prompt
        check_number("num_images_per_prompt", nipp, integer=True, low=1)
        sources = _as_list("source_prompt", source_prompt)
        targets = None if prompt_embeds is not None else _as_list("prompt", prompt)
        n_target = prompt_embeds.shape[0] if prompt_embeds is not None else len(targets)
        counts = {"prompt": n_target, "source_prompt": len(sources), "image": num_images}
        n = max(counts.values())
        bad = {k: v for k, v in counts.items() if v not in (1, n)}
        if bad:
            raise ValueError(f"batch size mismatch: {counts}; each of prompt, source_prompt and image must be "
                             f"given once or {n} times")
        base = [k // nipp for k in range(n * nipp)]

        def pick(count: int) -> tuple[int, ...]:
            return tuple(0 if count == 1 else i for i in base)

        return cls(
            target_prompts=tuple(targets[i] for i in pick(len(targets))) if targets is not None else None,
            source_prompts=tuple(sources[i] for i in pick(len(sources))),
            image_index=pick(num_images),
            embeds_index=pick(n_target) if prompt_embeds is not None else None,
        )


def _as_list(name: str, value) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(p, str) for p in items):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {value!r}")
    return list(items)
