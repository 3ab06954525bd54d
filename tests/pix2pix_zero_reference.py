"""The reference side of Pix2Pix-Zero parity tests: diffusers' StableDiffusionPix2PixZeroPipeline, quietly."""
from __future__ import annotations

import torch
from reference import checkpoint_path


def pipeline(export_dir):
    """A fresh pipeline per call: the reference's invert/__call__ swap the UNet's attention processors in place
    (prepare_unet) and set requires_grad on its attn2 weights, so a shared one would leak into other tests."""
    from diffusers import DDIMInverseScheduler, StableDiffusionPix2PixZeroPipeline
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    pipe = StableDiffusionPix2PixZeroPipeline.from_pretrained(
        checkpoint_path(export_dir), safety_checker=None, requires_safety_checker=False, feature_extractor=None,
        caption_generator=None, caption_processor=None, inverse_scheduler=None)
    # As diffusers' own invert example does: the inverse scheduler shares the editing scheduler's config.
    pipe.inverse_scheduler = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    te = pipe.text_encoder
    if not hasattr(te, "text_model"):  # transformers 5 flattened CLIPTextModel; the reference's clip_skip needs it
        object.__setattr__(te, "text_model", te)
    return pipe


def reference_invert(export_dir, seed: int, **kw) -> torch.Tensor:
    out = pipeline(export_dir).invert(**kw, generator=torch.Generator().manual_seed(seed), output_type="np")
    return out.latents


def reference_edit(export_dir, seed: int, **kw):
    return pipeline(export_dir)(**kw, generator=torch.Generator().manual_seed(seed)).images


def reference_embeds(export_dir, sentences: list[str]) -> torch.Tensor:
    """diffusers' get_embeds: the mean CLIP embedding of the sentences, (1, 77, D)."""
    return pipeline(export_dir).get_embeds(sentences)
