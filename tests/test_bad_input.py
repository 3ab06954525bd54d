"""Every bad input gets a clear error that names the problem (and, where there is one, the fix)."""
from __future__ import annotations

import logging
import math

import numpy as np
import PIL.Image
import pytest
import torch
from reference import sample_image

from cyclediff import Engine


@pytest.fixture(scope="module")
def engine(exports):
    return Engine.load(exports("tiny"), backend="torch", progress=False)


def _edit(engine, **kw):
    args = dict(prompt="a cat", source_prompt="a dog", image=sample_image(engine.manifest.sample_size),
                num_inference_steps=4, output_type="np")
    args.update(kw)
    return engine.edit(**args)


@pytest.mark.parametrize("kw, message", [
    (dict(image="photo.png"), "unsupported image type str"),
    (dict(image=PIL.Image.new("L", (32, 32))), "mode 'L'"),
    (dict(image=PIL.Image.new("RGBA", (32, 32))), "convert"),
    (dict(image=PIL.Image.new("RGB", (0, 0))), "smaller than"),
    (dict(image=PIL.Image.new("RGB", (1, 40))), "smaller than"),
    (dict(image=PIL.Image.new("RGB", (6, 6))), "multiple"),  # latents 3x3 cannot pass the UNet's downsampling
    (dict(image=[]), "empty"),
    (dict(image=None), "image is required"),
    (dict(image=np.zeros((32, 32, 4), np.float32)), "shape"),
    (dict(image=torch.full((3, 32, 32), float("nan"))), "NaN"),
    (dict(image=np.full((32, 32, 3), 200.0, np.float32)), "divide it by 255"),  # float 0..255: not [0, 1]
    (dict(image=[sample_image(32), sample_image(16)]), "share a size"),
    (dict(strength=0.0), "strength"),
    (dict(strength=1.5), "strength"),
    (dict(strength=float("nan")), "strength"),
    (dict(strength=0.1, num_inference_steps=4), "zero steps"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(num_inference_steps=2.5), "num_inference_steps"),
    (dict(num_inference_steps=1001), "exceeds"),
    (dict(eta=-0.1), "eta"),
    (dict(guidance_scale=math.nan), "guidance_scale"),
    (dict(guidance_scale=math.inf), "guidance_scale"),
    (dict(source_guidance_scale=-math.inf), "source_guidance_scale"),
    (dict(prompt=["a", "b"], image=[sample_image(32)] * 3), "batch size mismatch"),
    (dict(prompt=[]), "prompt"),
    (dict(prompt=None), "prompt"),
    (dict(source_prompt=3), "source_prompt"),
    (dict(generator=[torch.Generator()] * 3), "generators"),
    (dict(generator="seed"), "generator"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt"),
    (dict(output_type="jpeg"), "output_type"),
    (dict(callback_steps=0), "callback_steps"),
    (dict(clip_skip=5), "clip_skip"),
    (dict(cross_attention_kwargs={"scale": 0.5}), "cross_attention_kwargs"),
])
def test_bad_edit_arguments(engine, kw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _edit(engine, **kw)


def test_bad_engine_arguments(exports, tmp_path):
    with pytest.raises(ValueError, match="backend"):
        Engine.load(exports("tiny"), backend="tflite")
    with pytest.raises(ValueError, match="max_batch"):
        Engine.load(exports("tiny"), max_batch=0)
    with pytest.raises(ValueError, match="not a cyclediff export"):
        Engine.load(tmp_path)


def test_decode_rejects_non_codes(engine):
    with pytest.raises(TypeError, match="LatentCode"):
        engine.decode("code.safetensors", "a cat")


def test_overlong_prompt_is_truncated_with_warning(engine, caplog):
    long_prompt = " ".join(["an astronaut riding a horse"] * 30)
    with caplog.at_level(logging.WARNING, logger="cyclediff"):
        out = _edit(engine, prompt=long_prompt)
    assert "truncated" in caplog.text and np.isfinite(out.images).all()


def test_uint8_numpy_and_float_tensor_inputs_agree(engine):
    image = sample_image(engine.manifest.sample_size)
    as_uint8 = np.asarray(image)
    as_tensor = torch.from_numpy(as_uint8.astype(np.float32) / 255.0).permute(2, 0, 1)
    a = _edit(engine, image=as_uint8, generator=torch.Generator().manual_seed(0)).images
    b = _edit(engine, image=as_tensor, generator=torch.Generator().manual_seed(0)).images
    c = _edit(engine, image=image, generator=torch.Generator().manual_seed(0)).images
    assert np.abs(a - b).max() <= 1e-6 and np.abs(a - c).max() <= 1e-6


def test_callback_sees_every_nth_step(engine):
    seen = []
    _edit(engine, num_inference_steps=10, strength=1.0, callback=lambda i, t, x: seen.append((i, int(t), x.shape)),
          callback_steps=3)
    assert [i for i, _, _ in seen] == [0, 3, 6, 9] and seen[0][1] == 901


# ---- the export folder and the memory budget: the fix named in words every front door can use ---------------
def test_a_folder_without_a_manifest_names_the_whole_export_command(tmp_path):
    from cyclediff.export.manifest import ManifestError

    with pytest.raises(ManifestError) as err:
        Engine.load(tmp_path / "nope")
    text = str(err.value)
    assert "not a cyclediff export (no manifest.json)" in text
    assert f"`cyclediff-export --ckpt CKPT --out {tmp_path / 'nope'}`" in text


def test_a_file_is_not_offered_as_an_export_folder(exports, tmp_path):
    from cyclediff.export.manifest import ManifestError

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"not an export")
    with pytest.raises(ManifestError) as err:
        Engine.load(weights)
    text = str(err.value)
    assert f"{weights} is a file, not a cyclediff export folder; --engine (Engine.load) takes the folder" in text
    assert f"--out {weights}" not in text  # never: export into a file
    with pytest.raises(ManifestError) as err:
        Engine.load(exports("tiny") / "manifest.json")
    assert str(err.value).endswith(f"takes the export folder: pass {exports('tiny')}")


def test_the_memory_refusal_names_the_setting_neutrally(exports):
    from cyclediff.runtime.core.memory_plan import MemoryBudgetError

    engine = Engine.load(exports("tiny"), backend="onnxruntime", progress=False, max_memory="2MB")
    with pytest.raises(MemoryBudgetError) as err:
        engine.edit("a cat", "a dog", sample_image(engine.manifest.sample_size), num_inference_steps=5)
    text = str(err.value)
    assert err.value.field == "max_memory" and "Engine.load" not in text
    assert "or a larger max_memory budget (e.g. max_memory='" in text
    cli = err.value.renamed("--max-memory")  # what a CLI prints: a shell passes --max-memory='2GiB' as is
    assert "or a larger --max-memory budget (e.g. --max-memory='" in cli and "max_memory" not in cli
