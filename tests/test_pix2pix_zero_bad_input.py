"""Pix2Pix-Zero bad input: a clear error naming the problem, before any work, and nothing written."""
from __future__ import annotations

import pytest
import torch
from reference import sample_image

from cyclediff import Engine, InversionCode
from cyclediff.engine.base import BackendError
from cyclediff.runtime.cli import main
from cyclediff.runtime.core.latent_code import LatentCodeError
from cyclediff.runtime.methods.pix2pix_zero.directions import DirectionError, read_sentences, templated

STEPS = 2


@pytest.fixture(scope="module")
def tiny(exports) -> Engine:
    return Engine.load(exports("tiny"), backend="torch", progress=False)


@pytest.fixture(scope="module")
def cat(tiny) -> InversionCode:
    return tiny.invert("a cat", sample_image(tiny.manifest.sample_size), num_inference_steps=STEPS,
                       generator=torch.Generator().manual_seed(0), output_type=None)


def _edit(engine: Engine, **kw):
    d = engine.manifest.dims.text_width
    args = dict(prompt="a cat", source_embeds=torch.zeros(1, 77, d), target_embeds=torch.ones(1, 77, d),
                num_inference_steps=STEPS, output_type="latent")
    args.update(kw)
    return engine.pix2pix_zero(**args)


@pytest.mark.parametrize("source, target, match", [
    ([], ["a dog"], "source_sentences is empty"),
    (["a cat"], [], "target_sentences is empty"),
    ("a cat", ["a dog"], "must be a list of strings"),
    (["a cat", 3], ["a dog"], "only strings"),
])
def test_bad_sentences(tiny, source, target, match):
    with pytest.raises(DirectionError, match=match):
        tiny.edit_direction(source, target)


def test_sentence_file_and_templates(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DirectionError, match="no sentences"):
        read_sentences(tmp_path / "empty.txt")
    with pytest.raises(DirectionError, match="cannot read"):
        read_sentences(tmp_path / "missing.txt")
    (tmp_path / "cats.txt").write_text("a cat\n\n a cat on a mat \n")
    assert read_sentences(tmp_path / "cats.txt") == ["a cat", "a cat on a mat"]
    assert all("dog" in s for s in templated("dog")) and len(templated("dog")) >= 10
    with pytest.raises(DirectionError, match="non-empty"):
        templated(" ")


@pytest.mark.parametrize("kw, match", [
    (dict(source_embeds=None), "source_embeds is missing"),
    (dict(target_embeds=torch.zeros(1, 77, 7)), r"target_embeds has shape \(1, 77, 7\)"),
    (dict(source_embeds=torch.zeros(77, 32)), r"source_embeds has shape \(77, 32\)"),
    (dict(target_embeds=torch.zeros(1, 77, 32, dtype=torch.long)), "float torch.Tensor"),
])
def test_bad_embeddings(tiny, cat, kw, match):
    with pytest.raises(DirectionError, match=match):
        _edit(tiny, latents=cat, **kw)


def test_code_from_another_checkpoint_or_size(exports, tiny, cat):
    deep = Engine.load(exports("tiny-deep"), backend="torch", progress=False)
    with pytest.raises(LatentCodeError, match="another engine export"):
        _edit(deep, latents=cat, source_embeds=torch.zeros(1, 77, 32), target_embeds=torch.zeros(1, 77, 32))
    size = tiny.manifest.sample_size
    with pytest.raises(LatentCodeError, match="height/width ask for"):
        _edit(tiny, latents=cat, height=2 * size, width=2 * size)
    with pytest.raises(LatentCodeError, match=r"\(B, 4, h, w\)"):
        _edit(tiny, latents=torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="not a multiple"):
        _edit(tiny, latents=torch.zeros(1, 4, 15, 16))


def test_guided_step_on_a_forward_only_backend(exports, cat):
    ort = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    with pytest.raises(BackendError, match="backend='torch'"):
        _edit(ort, latents=cat)


@pytest.mark.parametrize("kw, match", [
    (dict(prompt=None), "pass prompt"),
    (dict(prompt=["a", "b"]), "one string"),
    (dict(num_images_per_prompt=2), "num_images_per_prompt must be 1"),
    (dict(cross_attention_guidance_amount=-1), "cross_attention_guidance_amount"),
    (dict(trajectory="sometimes"), "trajectory must be one of"),
    (dict(generator=[torch.Generator(), torch.Generator()]), "takes one"),
])
def test_bad_edit_arguments(tiny, cat, kw, match):
    with pytest.raises(ValueError, match=match):
        _edit(tiny, latents=cat, **kw)


def test_bad_invert_arguments(exports, tiny):
    image = sample_image(tiny.manifest.sample_size)
    with pytest.raises(ValueError, match="num_auto_corr_rolls=0"):
        tiny.invert("a cat", image, num_auto_corr_rolls=0)
    with pytest.raises(ValueError, match="one per call"):
        tiny.invert("a cat", [image, image], num_inference_steps=STEPS)
    with pytest.raises(LatentCodeError, match="not a cyclediff inversion code"):
        InversionCode.load(exports("tiny") / "manifest.json")


def test_cli_errors_write_nothing(exports, tmp_path, cat, capsys):
    out = tmp_path / "edit.png"
    base = ["--engine", str(exports("tiny")), "--method", "pix2pix-zero", "--out", str(out), "--steps", "2",
            "--save-code", str(tmp_path / "x.inv")]
    cases = [
        (["--image", "sample", "--caption", "a cat", "--source-word", "cat"], "--target-word"),
        (["--image", "sample", "--caption", "a cat", "--source-word", "cat", "--target-word", "dog",
          "--backend", "onnxruntime"], "forward only"),
        (["--image", "sample", "--source-word", "cat", "--target-word", "dog"], "--caption is required"),
        (["--image", "sample", "--caption", "a", "--source-word", "cat", "--target-word", "dog",
          "--strength", "0.5"], "CycleDiffusion options"),
        (["--image", "sample", "--caption", "a", "--source-sentences", str(tmp_path / "none.txt"),
          "--target-word", "dog"], "cannot read"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    other = tmp_path / "other.inv"
    InversionCode(cat.latents, "a cat", STEPS, "0" * 16).save(other)
    assert main(base + ["--code", str(other), "--source-word", "cat", "--target-word", "dog", "--quiet"]) == 2
    assert "another engine export" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.inv"]
