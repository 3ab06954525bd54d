"""The reference's quirks, fixed: eta = 0 without NaN, batches whose item i equals the single edit i."""
from __future__ import annotations

import numpy as np
import torch

from cyclediff import Engine
from reference import checkpoint_path, pipeline, reference_edit, sample_image

ARGS = dict(prompt="a photo of a cat", source_prompt="a photo of a dog", num_inference_steps=8, output_type="np")


def test_reference_divides_by_zero_at_eta_zero():
    """Documents the quirk being fixed: the reference's recorded noise at eta = 0 is 0/0."""
    from diffusers.pipelines.deprecated.stable_diffusion_variants.pipeline_cycle_diffusion import compute_noise
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    sched.set_timesteps(10)
    x = torch.randn(1, 4, 2, 2)
    noise = compute_noise(sched, x, x + 1, sched.timesteps[0], torch.randn_like(x), eta=0.0)
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


def test_reference_batch_with_guidance_is_wrong(exports):
    """Documents the quirk: diffusers' CFG batch stacks elements [0] and [1], so item 1 != its single edit."""
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    image = sample_image(engine.manifest.sample_size)
    pipe = pipeline(checkpoint_path(exports("tiny")))
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    try:
        batched = pipe(prompt=["a cat", "a dog"], source_prompt=["a dog", "a cat"], image=[image, image],
                       generator=gens, num_inference_steps=4, output_type="np").images
    except Exception:  # shape errors are the other way this quirk shows
        return
    single = pipe(prompt="a dog", source_prompt="a cat", image=image, generator=torch.Generator().manual_seed(2),
                  num_inference_steps=4, output_type="np").images
    assert np.abs(batched[1] - single[0]).max() > 1e-3


def test_one_image_broadcasts_to_several_prompts(exports):
    engine = Engine.load(exports("tiny"), backend="torch", progress=False)
    image = sample_image(engine.manifest.sample_size)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    batch = engine.edit(prompt=["a cat", "a bird"], source_prompt="a dog", image=image, generator=gens,
                        num_inference_steps=6, output_type="np").images
    single = engine.edit(prompt="a bird", source_prompt="a dog", image=image,
                         generator=torch.Generator().manual_seed(4), num_inference_steps=6, output_type="np").images
    assert np.abs(batch[1] - single[0]).max() <= 1e-4
