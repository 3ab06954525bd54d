"""The DDIM algebra in float64 with a synthetic UNet: reconstruction to ~1e-14 and batching invariances."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import Dims, specs
from cyclediff.runtime.core.buffers import BufferPool
from cyclediff.runtime.core.noise import NoiseSource
from cyclediff.runtime.core.schedule import SchedulerConfig, StepTable
from cyclediff.runtime.methods.cycle.decoder import DdimDecoder, TargetText
from cyclediff.runtime.methods.cycle.encoder import DpmEncoder, SourceText

DIMS = Dims(text_len=7, text_width=5, text_states=2, latent_channels=4, vae_scale=2)


class SyntheticUNet(ModelRunner):
    """ε = tanh(0.7·x + mean(emb) + t/1000): per-sample, so any batching must give identical values."""

    def __init__(self):
        super().__init__(specs(DIMS)["unet"])
        self.calls: list[int] = []

    def __call__(self, feeds, outputs):
        x, t, emb = feeds["sample"], feeds["timestep"], feeds["encoder_hidden_states"]
        self.calls.append(x.shape[0])
        bias = emb.mean(dim=(1, 2)).view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1).to(x.dtype) / 1000
        outputs["noise_pred"].copy_(torch.tanh(0.7 * x + bias))


def _setup(max_batch=5, batch=2, eta=0.6, steps=20, strength=0.9):
    pool = BufferPool(torch.device("cpu"), torch.float64)
    unet = SyntheticUNet()
    table = StepTable.build(SchedulerConfig(), steps, strength, eta)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, 4, 6, 4, generator=g, dtype=torch.float64)
    text = torch.randn(batch, 7, 5, generator=g, dtype=torch.float64)
    uncond = torch.randn(1, 7, 5, generator=g, dtype=torch.float64)
    return pool, unet, table, x0, text, uncond


def _encode(pool, unet, table, x0, source: SourceText, max_batch=5, seed=1):
    enc = DpmEncoder(unet, pool, max_batch)
    noise = NoiseSource(torch.Generator().manual_seed(seed), x0.shape[0], torch.device("cpu"))
    x_T = enc.noised(x0, table, noise).clone()
    xs = enc.trajectory(x0, x_T, table, noise)
    return x_T, enc.record(xs, enc.source_eps(xs, table, source), table).clone(), xs.clone()


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_reconstruction_identity_float64(scale):
    """prompt == source and guidance == source guidance ⇒ the decoder lands exactly on x0."""
    pool, unet, table, x0, text, uncond = _setup()
    u = uncond if scale != 1.0 else None
    x_T, z, _ = _encode(pool, unet, table, x0, SourceText(text, u, scale))
    out = DdimDecoder(unet, pool).run(x_T, z, table, TargetText(text, u, scale))
    assert float((out - x0).abs().max()) < 1e-12


def test_decoder_follows_source_trajectory_every_step():
    pool, unet, table, x0, text, _ = _setup()
    x_T, z, xs = _encode(pool, unet, table, x0, SourceText(text, None, 1.0))
    seen = []
    DdimDecoder(unet, pool).run(x_T, z, table, TargetText(text, None, 1.0),
                                callback=lambda i, t, x: seen.append(x.clone()))
    for i, x in enumerate(seen):
        assert float((x - xs[i + 1]).abs().max()) < 1e-12, i


def test_encoder_chunking_does_not_change_the_code():
    pool, unet, table, x0, text, uncond = _setup()
    source = SourceText(text, uncond, 2.0)
    _, z_small, _ = _encode(pool, unet, table, x0, source, max_batch=3)
    _, z_big, _ = _encode(BufferPool(torch.device("cpu"), torch.float64), unet, table, x0, source, max_batch=1000)
    assert torch.equal(z_small, z_big)


def test_encoder_batches_all_steps():
    pool, unet, table, x0, text, uncond = _setup(max_batch=16)
    _encode(pool, unet, table, x0, SourceText(text, uncond, 2.0), max_batch=16)
    k = table.num_steps
    assert sum(unet.calls) == k * 2 * 2 and len(unet.calls) == -(-k * 4 // 16)


def test_last_step_draws_nothing_and_lands_on_x0():
    pool, unet, table, x0, text, _ = _setup(strength=1.0, steps=10)
    assert table.draws == (True,) * 9 + (False,)
    _, _, xs = _encode(pool, unet, table, x0, SourceText(text, None, 1.0))
    assert torch.equal(xs[-1], x0)


def test_decoder_step_loop_allocates_no_new_buffers():
    pool, unet, table, x0, text, uncond = _setup()
    x_T, z, _ = _encode(pool, unet, table, x0, SourceText(text, uncond, 3.0))
    dec = DdimDecoder(unet, pool)
    dec.run(x_T, z, table, TargetText(text, uncond, 3.0))
    before = pool.allocations
    dec.run(x_T, z, table, TargetText(text, uncond, 5.0))
    assert pool.allocations == before


def test_steptable_matches_diffusers_coefficients():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(50)
    table = StepTable.build(SchedulerConfig(), 50, 0.8, 0.3)
    assert table.timesteps.tolist() == sched.timesteps[10:].tolist() and table.timesteps[0] == 781
    for i, t in enumerate(table.timesteps.tolist()):
        var = sched._get_variance(t, t - 20)
        assert torch.equal(table.sigma[i], 0.3 * var ** 0.5)
        assert torch.equal(table.sqrt_a[i], sched.alphas_cumprod[t] ** 0.5)


@pytest.mark.parametrize("steps, strength, expected", [(50, 0.8, 40), (100, 0.29, 28), (10, 1.0, 10), (3, 0.5, 1)])
def test_strength_truncates_like_python(steps, strength, expected):
    assert StepTable.build(SchedulerConfig(), steps, strength, 0.1).num_steps == expected


@pytest.mark.parametrize("field, value, message", [
    ("prediction_type", "v_prediction", "epsilon"),
    ("clip_sample", True, "clip_sample"),
    ("thresholding", True, "thresholding"),
    ("rescale_betas_zero_snr", True, "zero"),
    ("timestep_spacing", "karras", "timestep_spacing"),
])
def test_unservable_scheduler_configs_are_refused(field, value, message):
    from cyclediff.runtime.core.schedule import ScheduleError

    with pytest.raises(ScheduleError, match=message):
        SchedulerConfig.from_diffusers({"beta_schedule": "scaled_linear", field: value})


def test_steps_offset_is_forced_to_one_like_the_reference():
    assert SchedulerConfig.from_diffusers({"steps_offset": 0}).steps_offset == 1
    assert dataclasses.replace(SchedulerConfig(), steps_offset=0).timesteps(10)[-1] == 0
