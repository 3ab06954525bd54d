"""The runtime's tokenizer (tokenizers package on tokenizer.json) gives transformers' CLIPTokenizer ids."""
from __future__ import annotations

import pytest
import torch
from transformers import CLIPTokenizer

from cyclediff.export.manifest import TOKENIZER_DIR
from cyclediff.runtime.core.tokenizer import ClipTokenizer

PROMPTS = ["a photo of a cat", "", "Ünïcödé  TEXT,   with   spaces!! 🐱‍👤 東京", "word " * 120,
           "it's a dog's life; isn't it?", "İstanbul ΣΊΣΥΦΟΣ naïve café"]


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab+merges"])
def test_ids_equal_transformers(exports, tmp_path, files):
    folder = exports("tiny") / TOKENIZER_DIR
    want = CLIPTokenizer.from_pretrained(folder)(PROMPTS, padding="max_length", max_length=77, truncation=True,
                                                  return_tensors="pt").input_ids
    if files == "vocab+merges":  # an older export: no tokenizer.json, transformers' slow path
        CLIPTokenizer.from_pretrained(folder).save_pretrained(tmp_path)
        (tmp_path / "tokenizer.json").unlink(missing_ok=True)
        if not (tmp_path / "vocab.json").is_file():
            pytest.skip("this transformers writes only tokenizer.json")
        folder = tmp_path
    got = ClipTokenizer(folder).ids(PROMPTS)
    assert torch.equal(got, want)
