"""Guidance: the Langevin sampler's statistics (prior at λ = 0, descent with noise off) and reproducibility."""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from guidance_support import load, prior_code, tiny_net

from cyclediff.runtime.methods.guidance.energies import ClassifierEnergy


@pytest.fixture(scope="module")
def engine(exports):
    return load(exports("tiny"))


def test_zero_weights_sample_the_prior(engine):
    """λ = 0: z ← (1 − s/2)·z + √s·ξ has N(0, 1/(1 − s/4)) as its stationary law; from z = 3 everywhere, 600
    steps (15 relaxation times of the mean) must land on mean 0, variance ≈ 1 within sampling error."""
    code = prior_code(engine, steps=10, eta=0.5)
    start = dataclasses.replace(code, x_T=torch.full_like(code.x_T, 3.0), noises=torch.full_like(code.noises, 3.0))
    out = engine.guide("a cat", [ClassifierEnergy(tiny_net(), 0, weight=0.0)], start=start, n_steps=600,
                       guide_steps=None, generator=torch.Generator().manual_seed(0), output_type="latent")
    z = torch.cat([out.code.x_T.flatten(), out.code.noises.flatten()])  # d = 11264 coordinates
    d, s = z.numel(), 0.05
    assert abs(float(z.mean())) < 5 / d**0.5
    var = float(z.var())
    assert abs(var - 1 / (1 - s / 4)) < 5 * (2 / d) ** 0.5, var  # 5σ of a variance estimate from d normals
    assert abs(var - 1) < 0.1
    assert "classifier" not in out.history[-1]  # a zero-weight energy is never evaluated


def test_noise_off_descends_the_energy(engine):
    net = tiny_net()
    out = engine.guide("a cat", [ClassifierEnergy(net, 1, weight=2000.0)], start=prior_code(engine), n_steps=6,
                       guide_steps=2, noise_scale=0.0, output_type="latent")
    totals = [h["total"] for h in out.history]
    assert all(b < a for a, b in itertools.pairwise(totals)), totals
    assert out.history[-1]["classifier"] < out.history[0]["classifier"]


def test_seeded_runs_repeat_bit_for_bit(engine):
    def run(seed):
        energy = ClassifierEnergy(tiny_net(), 2, weight=5.0)
        return engine.guide("a cat", [energy], start=prior_code(engine), n_steps=3, guide_steps=2,
                            generator=torch.Generator().manual_seed(seed), output_type="latent").code.x_T

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_keep_best_returns_the_lowest_energy_seen(engine):
    out = engine.guide("a cat", [ClassifierEnergy(tiny_net(), 0, weight=5.0)], start=prior_code(engine),
                       n_steps=4, guide_steps=2, keep_best="classifier", step_size=0.5,
                       generator=torch.Generator().manual_seed(3), output_type="latent")
    values = [h["classifier"] for h in out.history]
    assert out.best_step is not None and 0 <= out.best_step[0] <= 4
    if out.best_step[0] < 4:  # the kept z is the argmin of the recorded values
        assert values[out.best_step[0]] == min(values)
