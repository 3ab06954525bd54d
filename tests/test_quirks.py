"""Quirks of the reference (diffusers' CycleDiffusionPipeline), fixed: each test checks what our engine does where
the reference goes wrong; a test that runs the reference asserts on what it returns (no early return)."""
from __future__ import annotations

import numpy as np
import torch
from reference import checkpoint_path, pipeline, reference_edit, sample_image

from cyclediff import Engine

ARGS = dict(prompt="a photo of a cat", source_prompt="a photo of a dog", num_inference_steps=8, output_type="np")


def test_eta_zero_records_zero_noise_where_the_reference_divides_by_zero(exports):
    """The quirk: at eta = 0 the reference's recorded noise is 0/0 (σ_t = 0 in compute_noise). Ours is zero, finite,
    and costs no source UNet call (that noise is their only use; the decoder adds none at eta = 0)."""
    from diffusers import DDIMScheduler
    from diffusers.pipelines.deprecated.stable_diffusion_variants.pipeline_cycle_diffusion import compute_noise

    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    image = sample_image(engine.manifest.sample_size)
    unet_calls = engine.dispatcher.stats["unet_calls"]
    code = engine.encode(image, "a photo of a dog", eta=0.0, num_inference_steps=8,
                         generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(code.noises).all() and not code.noises.any()
    assert engine.dispatcher.stats["unet_calls"] == unet_calls
    # The reference's computation on our first step (its scheduler from the same checkpoint): not finite.
    sched = DDIMScheduler.from_config(pipeline(checkpoint_path(exports("tiny"))).scheduler.config)
    sched.set_timesteps(8)
    x = code.x_T
    noise = compute_noise(sched, x + 1, x, code.timesteps[0], torch.randn_like(x), eta=0.0)
    assert not torch.isfinite(noise).all()


def test_eta_zero_is_plain_ddim_without_nan(exports):
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    image = sample_image(engine.manifest.sample_size)
    code = engine.encode(image, "a photo of a dog", eta=0.0, num_inference_steps=8,
                         generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(code.noises).all() and not code.noises.any()
    ours = engine.edit(image=image, eta=0.0, **ARGS, generator=torch.Generator().manual_seed(0)).images
    assert np.isfinite(ours).all()
    assert np.abs(ours - reference_edit(exports("tiny"), 0, image=image, eta=0.0, **ARGS)).max() <= 1e-4


def test_batched_item_equals_single_edit_with_its_generator(exports):
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    images = [sample_image(engine.manifest.sample_size, seed=s) for s in (0, 1)]
    prompts, sources = ["a photo of a cat", "a red car"], ["a photo of a dog", "a blue car"]
    gens = [torch.Generator().manual_seed(s) for s in (10, 11, 12, 13)]
    batch = engine.edit(prompt=prompts, source_prompt=sources, image=images, num_images_per_prompt=2,
                        generator=gens, num_inference_steps=8, output_type="np").images
    assert batch.shape[0] == 4
    for k in range(4):
        single = engine.edit(prompt=prompts[k // 2], source_prompt=sources[k // 2], image=images[k // 2],
                             generator=torch.Generator().manual_seed(10 + k), num_inference_steps=8,
                             output_type="np").images
        assert np.abs(batch[k] - single[0]).max() <= 1e-4, k  # kernels differ by batch size: float noise only
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # different generators give different edits


def test_batch_with_guidance_item_equals_the_references_single_edit(exports):
    """The quirk: the reference's CFG batch stacks elements [0] and [1] of the doubled tensors, so its item 1 is
    not its single edit with generator 1. Ours is: item i equals the reference's single edit with generator i."""
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    image = sample_image(engine.manifest.sample_size)
    pipe = pipeline(checkpoint_path(exports("tiny")))
    prompts, sources, seeds = ["a cat", "a dog"], ["a dog", "a cat"], (1, 2)
    batch = dict(prompt=prompts, source_prompt=sources, image=[image, image], num_inference_steps=4,
                 output_type="np")
    ours = engine.edit(**batch, generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    theirs = pipe(**batch, generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    assert ours.shape == theirs.shape == (2, *ours.shape[1:])
    singles = [pipe(prompt=p, source_prompt=sp, image=image, generator=torch.Generator().manual_seed(s),
                    num_inference_steps=4, output_type="np").images[0] for p, sp, s in zip(prompts, sources, seeds)]
    for i, single in enumerate(singles):
        assert np.abs(ours[i] - single).max() <= 1e-4, i  # parity with the reference at batch 1, item by item
    assert np.abs(theirs[1] - singles[1]).max() > 1e-3  # the reference's own batch gets item 1 wrong


def test_one_image_broadcasts_to_several_prompts(exports):
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    image = sample_image(engine.manifest.sample_size)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    batch = engine.edit(prompt=["a cat", "a bird"], source_prompt="a dog", image=image, generator=gens,
                        num_inference_steps=6, output_type="np").images
    single = engine.edit(prompt="a bird", source_prompt="a dog", image=image,
                         generator=torch.Generator().manual_seed(4), num_inference_steps=6, output_type="np").images
    assert np.abs(batch[1] - single[0]).max() <= 1e-4


def test_as_many_steps_as_training_timesteps_is_refused_not_an_index_error():
    """'leading' spacing + steps_offset 1 at 1000 steps reaches timestep 1000 (diffusers raises IndexError)."""
    import pytest

    from cyclediff.runtime.core.schedule import ScheduleError, SchedulerConfig, StepTable

    cfg = SchedulerConfig()
    assert StepTable.build(cfg, 999, 1.0, 0.1).timesteps[0] == 999
    with pytest.raises(ScheduleError, match="starts at timestep 1000, past the last of its 1000 training timesteps"):
        StepTable.build(cfg, 1000, 1.0, 0.1)
    assert StepTable.build(cfg, 1000, 0.8, 0.1).timesteps[0] == 800  # the edit never reaches the last step
    assert SchedulerConfig(timestep_spacing="trailing").timesteps(1000)[0] == 999
