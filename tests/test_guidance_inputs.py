"""Guidance: bad input is refused with a clear error and nothing written; the CLI end to end."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from guidance_support import load, prior_code, tiny_net

from cyclediff.runtime.core.latent_code import LatentCodeError
from cyclediff.runtime.methods.guidance import cli
from cyclediff.runtime.methods.guidance.clip_loader import load_clip
from cyclediff.runtime.methods.guidance.config import GuidanceError, LangevinConfig
from cyclediff.runtime.methods.guidance.energies import ClassifierEnergy, ClipEnergy, IdentityEnergy


@pytest.fixture(scope="module")
def engine(exports):
    return load(exports("tiny"))


@pytest.mark.parametrize("kwargs, match", [
    ({"energies": ["clip"]}, "unknown energy 'clip'"),
    ({"step_size": -0.1}, "step_size must be"),
    ({"n_steps": -1}, "n_steps must be"),
    ({"noise_scale": -1.0}, "noise_scale must be"),
    ({"guide_steps": 0}, "guide_steps must be"),
    ({"stepsize": 0.1}, "unknown guidance setting"),
    ({"keep_best": "nope"}, "keep_best='nope' names no energy"),
    ({"eta": 0.5, "num_inference_steps": 4, "guide_steps": 2}, "guide_steps=2 differs from the code's 4 steps"),
])
def test_bad_settings(engine, kwargs, match):
    with pytest.raises(GuidanceError, match=match):
        engine.guide("a cat", **{"energies": [], **kwargs})


def test_negative_weight():
    with pytest.raises(GuidanceError, match="weight must be a finite number >= 0"):
        ClassifierEnergy(tiny_net(), 0, weight=-1.0)


def test_start_code_from_another_resolution_or_checkpoint(engine):
    code = prior_code(engine)
    with pytest.raises(LatentCodeError, match="start code is for 32x32 pixels"):
        engine.guide("a cat", start=code, height=64, width=64)
    with pytest.raises(LatentCodeError, match="another engine export and records no latent space"):
        engine.guide("a cat", start=dataclasses.replace(code, engine_digest="0" * 12, space=None))
    other = dataclasses.replace(code.space, vae_scaling_factor=0.5)
    with pytest.raises(LatentCodeError, match="VAE scaling factor 0.5 in the code's export"):
        engine.guide("a cat", start=dataclasses.replace(code, engine_digest="0" * 12, space=other))
    with pytest.raises(GuidanceError, match="guide_steps=2 differs"):
        engine.guide("a cat", start=prior_code(engine, eta=0.5), guide_steps=2)


def test_missing_clip_folder_says_how_to_get_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    with pytest.raises(GuidanceError, match="hf download openai/clip-vit-base-patch32"):
        load_clip(tmp_path / "no-such-clip")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(GuidanceError, match="not in the local Hugging Face cache.*hf download"):
        load_clip("openai/clip-vit-base-patch32")


def test_clip_energy_shape_range_and_replay(random_clip):
    """(B,) values of 1 − cos in [0, 2]; without augmentations the energy is a pure function of the image."""
    clip = load_clip(random_clip)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    e = ClipEnergy(clip, "a photo of a cat", n_aug=3)
    values = e(x, torch.Generator().manual_seed(0))
    assert values.shape == (2,) and bool(((values >= 0) & (values <= 2)).all())
    no_aug = ClipEnergy(clip, "a photo of a cat", n_aug=1, augment=None)
    assert torch.allclose(no_aug(x), no_aug(x))


def _args(folder, out, *extra):
    return ["--engine", str(folder), "--prompt", "a cat", "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize("extra, match", [
    (["--clip-text", "a dog", "--clip-model", "/no/such/clip"], "hf download"),
    (["--step-size", "-1"], "--step-size: step_size must be"),
    (["--start-image", "sample"], "--start-image needs --source-prompt"),
    (["--strip", "strip.gif"], "unknown image format"),
])
def test_cli_bad_input_writes_nothing(exports, tmp_path, capsys, extra, match):
    out = tmp_path / "out" / "guided.png"
    assert cli.main(_args(exports("tiny"), out, *extra)) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_guides_with_clip_and_writes_every_file(exports, random_clip, tmp_path):
    out, strip, code = tmp_path / "g.png", tmp_path / "strip.png", tmp_path / "g.code"
    rc = cli.main(_args(exports("tiny"), out, "--clip-text", "a dog", "--clip-model", str(random_clip),
                        "--clip-augment", "2", "--steps", "2", "--guide-steps", "2", "--decode-steps", "3",
                        "--seed", "0", "--strip", str(strip), "--strip-every", "1", "--save-code", str(code),
                        "--start-image", "sample", "--source-prompt", "a house"))
    assert rc == 0 and out.is_file() and strip.is_file() and code.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.code", "g.png", "strip.png"]  # no temp files left


def test_config_defaults_are_the_repositorys():
    c = LangevinConfig()
    assert (c.step_size, c.n_steps, c.noise_scale, c.keep_best, c.checkpoint) == (0.05, 200, 1.0, None, True)


def test_identity_energy_is_zero_for_the_reference_itself():
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).requires_grad_(False)
    ref = torch.rand(1, 3, 16, 16) * 2 - 1
    e = IdentityEnergy(features, ref, weight=1.0)
    assert float(e(ref)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(e(-ref)[0]) > 0.1
    with pytest.raises(ValueError, match=r"reference must be a \(1, 3, H, W\) tensor"):
        IdentityEnergy(features, ref[0])
