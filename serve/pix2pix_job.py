"""Pix2Pix-Zero for /v1/edit and /v1/jobs (field method="pix2pix-zero"): invert the image with the source prompt
as its caption, then edit it along CLIP(target) − CLIP(source) once per target prompt, as cyclediff-run
--method pix2pix-zero does with --caption. strength, eta and source_guidance_scale do not apply (diffusers'
defaults: the whole schedule, eta 0)."""
from __future__ import annotations

from typing import Any


def guided(engine) -> bool:
    """Can the engine run the cross-attention guided step (amount > 0): the torch backend, or an export with the
    attention-map UNet (cyclediff-export --attention-maps) on a forward-only backend."""
    from cyclediff.export.attention_maps import UNET_ATTN

    return engine.backend == "torch" or UNET_ATTN in engine.manifest.models


def steps(job) -> int:
    """The progress bar's length: the inversion's steps, then each prompt's edit."""
    return (1 + len(job.request.prompts)) * job.request.params.num_inference_steps


def run(engine, job, image, generator, step) -> list[Any]:
    """One inversion, then one edit per target prompt; step(*_) after every denoising step."""
    import torch

    from cyclediff.runtime.methods.pix2pix_zero.requests import InvertRequest, Pix2PixZeroRequest

    r = job.request
    n = r.params.num_inference_steps
    code = engine.run(InvertRequest(r.source_prompt, image, n, generator=generator, output_type=None,
                                    callback=step))
    out = []
    for prompt in r.prompts:
        direction = engine.edit_direction([r.source_prompt], [prompt])
        edit = Pix2PixZeroRequest(prompt=code.prompt, source_embeds=direction.source_embeds,
                                  target_embeds=direction.target_embeds, num_inference_steps=n,
                                  guidance_scale=r.params.guidance_scale, latents=code, amount=job.amount,
                                  generator=torch.Generator().manual_seed(job.seed), output_type=r.output_type,
                                  callback=step)
        out += list(engine.run(edit).images)
    return out
