"""Prompt -> CLIP embeddings (B, 77, D): tokenize as diffusers does, run the text encoder, pick the layer."""
from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.runtime.core.tokenizer import ClipTokenizer

log = logging.getLogger("cyclediff")
_CACHE_SIZE = 64


class PromptEncoder:
    """Owns the tokenizer and the text-encoder runner; caches embeddings per (prompt, clip_skip).

    Locking rule: `_lock` is held for the whole of `encode` (tokenizer, cache and the text-encoder call), so
    concurrent callers never see a half-updated cache and a prompt is encoded once.
    """

    def __init__(self, tokenizer_dir: Path, runner: ModelRunner, device: torch.device, text_states: int):
        self.tokenizer = ClipTokenizer(tokenizer_dir)
        self.runner = runner
        self.device = device
        self.text_states = text_states
        # Serving repeats prompts ("" every call); a bounded LRU keeps memory flat.
        self._cache: collections.OrderedDict[tuple[str, int | None], torch.Tensor] = collections.OrderedDict()
        self._lock = threading.Lock()

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """(B, 77) int64, padded to max length, truncated with the warning diffusers gives."""
        tok = self.tokenizer
        n = tok.model_max_length
        whole = tok.whole(prompts)
        # One short line per cut prompt (not the whole prompt, which may be a paragraph): where the cut is.
        for prompt, ids in dict(zip(prompts, whole)).items():
            dropped = ids[n - 1: -1]
            if dropped:
                log.warning('prompt truncated to the %d tokens CLIP reads: %d tokens dropped, from "%s..."',
                            n, len(dropped), tok.decode(dropped[:8]).strip())
        return tok.ids(prompts, whole)

    def encode(self, prompts: list[str], clip_skip: int | None = None) -> torch.Tensor:
        """(B, 77, D) float32 on the device; clip_skip=k takes hidden state -(k+1) through the final norm."""
        if clip_skip is not None and not 0 <= clip_skip < self.text_states - 1:
            raise ValueError(f"clip_skip must be in [0, {self.text_states - 2}] for this text encoder, got {clip_skip}")
        with self._lock:
            return self._encode_locked(prompts, clip_skip)

    def _encode_locked(self, prompts: list[str], clip_skip: int | None) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if (p, clip_skip) not in self._cache]
        if missing:
            states = self._run(self.token_ids(missing))  # (M, L+1, 77, D)
            layer = -1 if clip_skip is None else -(clip_skip + 1)
            for i, p in enumerate(missing):
                self._cache[(p, clip_skip)] = states[i, layer].clone()
        result = torch.stack([self._cache[(p, clip_skip)] for p in prompts])
        for p in prompts:
            self._cache.move_to_end((p, clip_skip))
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    def _run(self, ids: torch.Tensor) -> torch.Tensor:
        spec = self.runner.spec.outputs[0]
        shape = (ids.shape[0], *spec.shape[1:])
        out = torch.empty(shape, dtype=torch.float32, device=self.device)
        self.runner({"input_ids": ids.to(self.device)}, {spec.name: out})
        return out
