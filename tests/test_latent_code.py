"""Encode once, decode many; LatentCode save/load; codes from another engine are refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import sample_image

from cyclediff import Engine, LatentCode, LatentCodeError


@pytest.fixture(scope="module")
def engine(exports):
    return Engine.load(exports("tiny"), backend="onnxruntime", progress=False)


def _encode(engine, seed=0, **kw):
    image = sample_image(engine.manifest.sample_size)
    return engine.encode(image, "a photo of a dog", num_inference_steps=10, generator=torch.Generator().manual_seed(seed),
                         **kw)


def test_encode_once_decode_many_equals_separate_edits(engine):
    code = _encode(engine)
    image = sample_image(engine.manifest.sample_size)
    for prompt in ("a photo of a cat", "an oil painting of a horse"):
        decoded = engine.decode(code, prompt, output_type="np").images
        edited = engine.edit(prompt=prompt, source_prompt="a photo of a dog", image=image, num_inference_steps=10,
                             generator=torch.Generator().manual_seed(0), output_type="np").images
        assert np.abs(decoded - edited).max() <= 1e-6


def test_guided_source_code_matches_edit(engine):
    code = _encode(engine, source_guidance_scale=3.0)
    image = sample_image(engine.manifest.sample_size)
    decoded = engine.decode(code, "a cat", guidance_scale=5.0, output_type="np").images
    edited = engine.edit(prompt="a cat", source_prompt="a photo of a dog", image=image, guidance_scale=5.0,
                         source_guidance_scale=3.0, num_inference_steps=10, generator=torch.Generator().manual_seed(0),
                         output_type="np").images
    assert np.abs(decoded - edited).max() <= 1e-6


def test_save_load_round_trip(engine, tmp_path):
    code = _encode(engine)
    code.save(tmp_path / "code.safetensors")
    loaded = LatentCode.load(tmp_path / "code.safetensors")
    assert torch.equal(loaded.x_T, code.x_T) and torch.equal(loaded.noises, code.noises)
    assert loaded.timesteps == code.timesteps and loaded.engine_digest == code.engine_digest
    a = engine.decode(code, "a cat", output_type="np").images
    b = engine.decode(loaded, "a cat", output_type="np").images
    assert np.array_equal(a, b)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_corrupt_code_file_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a code")
    with pytest.raises(LatentCodeError, match="not a cyclediff latent code"):
        LatentCode.load(bad)


def test_code_from_another_latent_space_is_refused(engine, exports):
    other = Engine.load(exports("tiny-trailing"), backend="onnxruntime", progress=False)
    with pytest.raises(LatentCodeError, match="not this engine's.*training schedule beta_schedule 'scaled_linear' "
                                              "in the code's export, 'linear' in this one"):
        other.decode(_encode(engine), "a cat")


def test_code_with_wrong_prompt_count_is_refused(engine):
    with pytest.raises(LatentCodeError, match="target prompts"):
        engine.decode(_encode(engine), ["a cat", "a dog"])


def test_code_item_decodes_like_batch_item(engine):
    image = sample_image(engine.manifest.sample_size)
    code = engine.encode([image, image], ["a dog", "a dog"], num_inference_steps=6,
                         generator=[torch.Generator().manual_seed(s) for s in (0, 1)])
    both = engine.decode(code, ["a cat", "a bird"], output_type="np").images
    second = engine.decode(code.item(1), "a bird", output_type="np").images
    assert np.abs(both[1] - second[0]).max() <= 1e-4
