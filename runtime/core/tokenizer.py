"""CLIP tokenization as diffusers does it (pad to 77, truncate keeping the end token), from the export's files.

With a `tokenizer.json` it runs on the `tokenizers` package alone: the same library transformers'
CLIPTokenizer runs on, without importing transformers (about 1 s of every Engine.load). Older exports with
only vocab.json/merges.txt use transformers' CLIPTokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch


class ClipTokenizer:
    """ids(prompts) -> (B, L) int64; whole(prompt) -> [bos, ..., eos] untruncated; decode(ids) -> text."""

    def __init__(self, folder: Path):
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        self.model_max_length = int(cfg.get("model_max_length", 77))
        self._fast = self._slow = None
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._fast.no_truncation()
            self._fast.no_padding()
            self._pad_id = self._fast.token_to_id(cfg.get("pad_token", "<|endoftext|>"))
        else:
            from transformers import CLIPTokenizer

            self._slow = CLIPTokenizer.from_pretrained(folder)
            self._pad_id = self._slow.pad_token_id

    def whole(self, prompts: list[str]) -> list[list[int]]:
        if self._fast is not None:
            return [e.ids for e in self._fast.encode_batch(prompts)]
        return [self._slow(p).input_ids for p in prompts]

    def ids(self, prompts: list[str], whole: list[list[int]] | None = None) -> torch.Tensor:
        """(B, L): [bos, tokens…, eos] cut to L (keeping eos last, as HF truncation does), then padded.
        whole: the prompts' untruncated ids when the caller has them already."""
        n = self.model_max_length
        rows = [w if len(w) <= n else w[: n - 1] + w[-1:] for w in (whole or self.whole(prompts))]
        return torch.tensor([r + [self._pad_id] * (n - len(r)) for r in rows], dtype=torch.int64)

    def decode(self, ids: list[int]) -> str:
        if self._slow is not None:
            return self._slow.decode(ids)
        # CLIP's vocabulary marks word ends with </w>; the saved decoder is byte-level only, so map them to spaces
        return self._fast.decode(ids).replace("</w>", " ").strip()
