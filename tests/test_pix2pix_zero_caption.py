"""The optional BLIP captioner, on a random-weight BLIP built from a config (no download)."""
from __future__ import annotations

import PIL.Image
import pytest

from cyclediff.runtime.methods.pix2pix_zero import captioner

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "photography", "of", "cat", "dog", "house"]


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory):
    import torch
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder = tmp_path_factory.mktemp("blip")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), bos_token="[DEC]")
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = dict(small, vocab_size=len(VOCAB), encoder_hidden_size=32, bos_token_id=5, pad_token_id=0,
                sep_token_id=3, eos_token_id=3)
    torch.manual_seed(0)
    config = BlipConfig(text_config=text, vision_config=dict(small, image_size=32, patch_size=8, projection_dim=32),
                        projection_dim=32)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    return folder


def test_caption_from_a_local_blip_folder(blip_folder):
    model, processor = captioner.load(blip_folder)
    text = captioner.caption(model, processor, PIL.Image.new("RGB", (40, 40), "red"), max_new_tokens=4)
    assert isinstance(text, str)
    assert set(text.split()) <= set(VOCAB)  # a random model, but only words of its vocabulary


def test_not_a_blip_folder(tmp_path):
    with pytest.raises(captioner.CaptionError, match="--caption"):
        captioner.load(tmp_path)
