"""Guidance: ∇_z E against finite differences (float64), checkpointed == plain backward, and G(z) == decode."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from guidance_support import load, prior_code, saved_bytes, tiny_net

from cyclediff.runtime.methods.guidance import langevin
from cyclediff.runtime.methods.guidance.clip_loader import load_clip
from cyclediff.runtime.methods.guidance.energies import ClassifierEnergy, ClipEnergy
from cyclediff.runtime.methods.guidance.method import _energy_fn
from cyclediff.runtime.methods.guidance.torch_parts import TorchParts


@pytest.fixture(scope="module")
def engine(exports):
    return load(exports("tiny"))


def _energy(decoder, energies):
    """E's guided part with the augmentations replayed identically at every evaluation (seed 0)."""
    def fn(zs):
        return _energy_fn(decoder, energies, torch.Generator().manual_seed(0))(zs)

    return fn


def _guided(fn, z) -> torch.Tensor:
    with torch.no_grad():
        return fn(z)[0].sum()


def test_gradient_matches_finite_differences_in_float64(engine, random_clip):
    """Directional derivatives of E(z) = Σ λ E_i(G(z)) + ½‖z‖² through 2 DDIM steps with injected noises (UNet,
    classifier-free guidance), the VAE decoder, a CLIP energy with all four augmentations and a classifier."""
    code = prior_code(engine, steps=2, eta=0.7)
    parts = engine.guidance.torch_parts()
    double = TorchParts(copy.deepcopy(parts.unet).double(), copy.deepcopy(parts.vae_decoder).double())
    decoder = engine.guidance.sampler(code, "a red bird", 7.5, None, True, double, torch.float64)
    clip = load_clip(random_clip)
    clip.model.double()
    energies = [ClipEnergy(clip, "a photo of a bird", weight=3.0, n_aug=2), ClassifierEnergy(tiny_net(0, torch.float64), 1, 2.0)]
    latent = langevin.Latent((code.x_T.double(), code.noises.double()), (0, 1))
    fn = _energy(decoder, energies)
    _, _, grads, _ = langevin.evaluate(latent, fn, latent.parts)
    # ∇ of the prior ½‖z‖² is z; the rest is the gradient through G and the energies, checked on its own so
    # that the (much larger) prior term cannot hide an error there.
    guided = tuple(gr - p for gr, p in zip(grads, latent.parts))
    g = torch.Generator().manual_seed(5)
    for mask in ((1, 0), (0, 1), (1, 1)):  # along x_T only, the injected noises only, both
        v = tuple(m * torch.randn(p.shape, generator=g, dtype=torch.float64) for m, p in zip(mask, latent.parts))
        h = 1e-5
        plus = _guided(fn, tuple(p + h * d for p, d in zip(latent.parts, v)))
        minus = _guided(fn, tuple(p - h * d for p, d in zip(latent.parts, v)))
        numeric = float((plus - minus) / (2 * h))
        analytic = float(sum((gr * d).sum() for gr, d in zip(guided, v)))
        assert abs(analytic) > 1e-4  # a real signal, not two zeros agreeing
        assert abs(numeric - analytic) <= 1e-6 * abs(analytic), (mask, numeric, analytic)


def test_checkpointed_gradient_equals_plain_backward(engine):
    code = prior_code(engine, steps=3, eta=0.3)
    energies = [ClassifierEnergy(tiny_net(), 0, 5.0)]
    latent = langevin.Latent((code.x_T, code.noises), (0, 1))
    grads = []
    for checkpoint in (True, False):
        decoder = engine.guidance.sampler(code, "a cat", 7.5, None, checkpoint)
        grads.append(langevin.evaluate(latent, _energy(decoder, energies), latent.parts)[2])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_sampler_equals_the_engines_decode(engine, exports, backend):
    """G(z) inside the loop is the ordinary decode of the same code: bitwise on the torch backend (same
    modules, same expression order); on onnxruntime the torch modules come from the checkpoint (parity bound)."""
    e = engine if backend == "torch" else load(exports("tiny"), backend)
    code = prior_code(e, steps=5, eta=0.4)
    decoder = e.guidance.sampler(code, "a cat", 7.5, None)
    with torch.no_grad():
        latents = decoder.latents(code.x_T, code.noises)
        pixels = (decoder(code.x_T, code.noises) / 2 + 0.5).clamp(0, 1)
    ref_latents = e.decode(code, "a cat", output_type="latent").images
    ref_pixels = e.decode(code, "a cat", output_type="pt").images
    if backend == "torch":
        assert torch.equal(latents, ref_latents) and torch.equal(pixels, ref_pixels)
    else:
        assert float((pixels - ref_pixels).abs().max()) < 2e-3


def test_zero_langevin_steps_return_exactly_the_decode(engine):
    image = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    code = engine.encode(image, "a house", num_inference_steps=10, generator=torch.Generator().manual_seed(0))
    out = engine.guide("a castle", [ClassifierEnergy(tiny_net(), 0, 5.0)], start=code, n_steps=0, output_type="np")
    ref = engine.decode(code, "a castle", output_type="np").images
    assert np.array_equal(out.images, ref)
    assert torch.equal(out.code.x_T, code.x_T) and out.history == ()


def _saved_bytes(engine, steps: int, checkpoint: bool) -> int:
    return saved_bytes(engine, steps, checkpoint)


def test_checkpointed_memory_does_not_grow_with_guide_steps(engine):
    latent_bytes = prior_code(engine).x_T.numel() * 4
    plain = _saved_bytes(engine, 6, False) - _saved_bytes(engine, 2, False)
    kept = _saved_bytes(engine, 6, True) - _saved_bytes(engine, 2, True)
    assert plain > 100 * latent_bytes  # without checkpointing every step's UNet activations are kept
    assert kept <= 4 * 4 * latent_bytes, (kept, latent_bytes)  # with it: each extra step's input x only
