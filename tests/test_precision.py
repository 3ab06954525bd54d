"""fp16 overflow guard: non-finite fp16 VAE results are recomputed in fp32, with one warning."""
from __future__ import annotations

import logging

import pytest
import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import Dims, specs
from cyclediff.runtime.core.precision import (
    GuardedRunner,
    OverflowGuard,
    all_finite,
    run_vae_decode_guarded,
    run_vae_encode_guarded,
)

DIMS = Dims(text_len=7, text_width=5, text_states=2, latent_channels=4, vae_scale=2)


class Recorder:
    """A fake VAE half: returns `value`-filled images (NaN or inf when it 'overflows') and counts calls."""

    def __init__(self, value: float):
        self.value, self.calls = value, 0

    def __call__(self, latents):
        self.calls += 1
        return torch.full((latents.shape[0], 3, 4, 4), self.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_decode_falls_back_to_fp32_and_warns_once(bad, caplog):
    guard, fp16, fp32 = OverflowGuard("VAE decoder"), Recorder(bad), Recorder(0.5)
    latents = torch.zeros(2, 4, 2, 2)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            out = run_vae_decode_guarded(fp16, fp32, latents, guard)
            assert torch.equal(out, torch.full((2, 3, 4, 4), 0.5))
    assert (fp16.calls, fp32.calls, guard.fallbacks) == (3, 3, 3)
    assert sum("re-running it in fp32" in r.message for r in caplog.records) == 1


def test_finite_fp16_result_is_kept():
    fp16, fp32 = Recorder(0.25), Recorder(0.5)
    out = run_vae_decode_guarded(fp16, fp32, torch.zeros(1, 4, 2, 2), OverflowGuard("x"))
    assert out.unique().item() == 0.25 and fp32.calls == 0


def test_encode_falls_back_when_either_moment_overflows():
    def fp16(images):
        return torch.zeros(1, 4, 2, 2), torch.tensor([[[[float("nan")]]]]).expand(1, 4, 2, 2)

    def fp32(images):
        return torch.ones(1, 4, 2, 2), torch.ones(1, 4, 2, 2)

    guard = OverflowGuard("VAE encoder")
    mean, std = run_vae_encode_guarded(fp16, fp32, torch.zeros(1, 3, 4, 4), guard)
    assert mean.sum().item() == 4 * 2 * 2 and std.sum().item() == 16 and guard.fallbacks == 1
    mean, std = run_vae_encode_guarded(fp32, fp16, torch.zeros(1, 3, 4, 4), guard)
    assert guard.fallbacks == 1


class FakeRunner(ModelRunner):
    def __init__(self, value: float):
        super().__init__(specs(DIMS)["vae_decoder"])
        self.value, self.calls = value, 0

    def __call__(self, feeds, outputs):
        self.calls += 1
        outputs["image"].fill_(self.value)


def test_guarded_runner_overwrites_outputs_and_loads_fallback_lazily():
    made = []

    def factory():
        made.append(FakeRunner(1.0))
        return made[-1]

    runner = GuardedRunner(FakeRunner(float("nan")), factory, OverflowGuard("VAE decoder"))
    out = {"image": torch.empty(1, 3, 4, 4)}
    for _ in range(2):
        runner({"latent": torch.zeros(1, 4, 2, 2)}, out)
        assert torch.equal(out["image"], torch.ones(1, 3, 4, 4))
    assert len(made) == 1 and made[0].calls == 2 and runner.spec.name == "vae_decoder"


def test_guarded_runner_skips_fallback_when_finite():
    fallback = FakeRunner(1.0)
    runner = GuardedRunner(FakeRunner(0.0), fallback, OverflowGuard("x"))
    runner({"latent": torch.zeros(1, 4, 2, 2)}, {"image": torch.empty(1, 3, 4, 4)})
    assert fallback.calls == 0


def test_all_finite():
    assert all_finite(torch.zeros(3), torch.ones(2, 2))
    assert not all_finite(torch.zeros(3), torch.tensor([1.0, float("nan")]))
