"""End-to-end parity: Engine.edit equals diffusers' CycleDiffusionPipeline with the same seed, per backend."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import reference_edit, sample_image

from cyclediff import Engine

TOLERANCE = {"torch": 1e-4, "onnxruntime": 2e-3, "openvino": 2e-3}
CASES = [
    dict(),  # diffusers defaults (CFG on: guidance 7.5, eta 0.1, strength 0.8)
    dict(guidance_scale=1.0),  # CFG off: batch-2 reference step, source_guidance_scale ignored
    dict(strength=1.0, num_inference_steps=7),
    dict(eta=0.7, source_guidance_scale=2.5, strength=0.29, num_inference_steps=100),  # int(100*0.29) = 28
    dict(guidance_scale=3.0, num_inference_steps=13, strength=0.5, eta=1.0),
    dict(eta=0.0),  # the reference divides by zero here; its output is still finite
]


def _edit_args(engine: Engine, **kw) -> dict:
    args = dict(prompt="a photo of a cat", source_prompt="a photo of a dog", num_inference_steps=10,
                image=sample_image(engine.manifest.sample_size), output_type="np")
    args.update(kw)
    return args


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_tiny_matches_diffusers(exports, backend, case):
    engine = Engine.load(exports("tiny"), backend=backend, progress=False)
    args = _edit_args(engine, **case)
    ours = engine.edit(**args, generator=torch.Generator().manual_seed(7)).images
    ref = reference_edit(exports("tiny"), 7, **args)
    err = float(np.abs(ours - ref).max())
    print(f"tiny {backend} {case}: max abs diff {err:.2e}")
    assert ours.shape == ref.shape and np.isfinite(ours).all()
    assert err <= TOLERANCE[backend]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("name", ["tiny-deep", "tiny-trailing"])
def test_other_checkpoint_configs_match_diffusers(exports, backend, name):
    """Deeper VAE (latent scale 4), 3-layer text encoder, linear-projection attention, trailing/linear schedule."""
    engine = Engine.load(exports(name), backend=backend, progress=False)
    for case in (dict(), dict(guidance_scale=1.0, eta=0.3, strength=0.6)):
        args = _edit_args(engine, **case)
        ours = engine.edit(**args, generator=torch.Generator().manual_seed(1)).images
        err = float(np.abs(ours - reference_edit(exports(name), 1, **args)).max())
        print(f"{name} {backend} {case}: max abs diff {err:.2e}")
        assert err <= TOLERANCE[backend]


def test_clip_skip_and_prompt_embeds_match_diffusers(exports):
    engine = Engine.load(exports("tiny-deep"), backend="torch", progress=False)
    args = _edit_args(engine, clip_skip=1)
    ours = engine.edit(**args, generator=torch.Generator().manual_seed(2)).images
    assert float(np.abs(ours - reference_edit(exports("tiny-deep"), 2, **args)).max()) <= 1e-4
    embeds = torch.randn(1, 77, engine.manifest.dims.text_width, generator=torch.Generator().manual_seed(0))
    args = _edit_args(engine, prompt_embeds=embeds)
    ours = engine.edit(**args, generator=torch.Generator().manual_seed(2)).images
    assert float(np.abs(ours - reference_edit(exports("tiny-deep"), 2, **args)).max()) <= 1e-4


def test_pil_output_matches_diffusers(exports):
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    args = _edit_args(engine, output_type="pil")
    ours = np.asarray(engine.edit(**args, generator=torch.Generator().manual_seed(5)).images[0], dtype=int)
    ref = np.asarray(reference_edit(exports("tiny"), 5, **args)[0], dtype=int)
    assert np.abs(ours - ref).max() <= 1  # rounding of values within 1e-5 of a .5 boundary may differ


def test_latent_input_and_output_match_diffusers(exports):
    """A 4-channel tensor is taken as latents (no VAE, no draw); output_type='latent' returns the final latents."""
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    side = engine.manifest.sample_size // engine.manifest.dims.vae_scale
    latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(4))
    args = _edit_args(engine, image=latents, output_type="latent")
    ours = engine.edit(**args, generator=torch.Generator().manual_seed(3)).images
    ref = reference_edit(exports("tiny"), 3, **args)
    assert float((ours - ref).abs().max()) <= 1e-4
