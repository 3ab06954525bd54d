"""The protocol's metrics on image batches: PSNR and L2 (torchmetrics), SSIM (scikit-image), CLIP score and
directional CLIP (from CLIP embeddings).

Images are float tensors (N, 3, H, W) on [0, 1]. Every function returns one value per image, shape (N,).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cyclediff.eval.metric_names import HIGHER_IS_BETTER, METRICS  # noqa: F401  (re-exported)


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB on [0, 1] (inf for identical images): torchmetrics, per image."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    images, reference = _pair(images, reference)
    return peak_signal_noise_ratio(images, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SSIM as Wang et al.'s MATLAB code computes it: 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, data
    range 1, averaged over the window positions inside the image, then over the channels. scikit-image with the
    settings its documentation gives for that implementation, per image. (torchmetrics' SSIM also averages
    the windows over its reflection-padded border: about 1e-3 off at 40 px.)"""
    from skimage.metrics import structural_similarity

    images, reference = _pair(images, reference)
    if min(images.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 px (its window), got {tuple(images.shape[-2:])}")
    scores = [structural_similarity(a.cpu().numpy(), b.cpu().numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=0)
              for a, b in zip(images, reference)]
    return torch.tensor(scores, dtype=torch.float64)


def l2(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel difference on [0, 1] (PSNR = -10 log10 L2): torchmetrics, per image."""
    from torchmetrics.functional.regression import mean_squared_error

    images, reference = _pair(images, reference)
    return torch.stack([mean_squared_error(a, b) for a, b in zip(images, reference)])


def clip_score(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """torchmetrics' CLIPScore definition, max(100 · cos(E_image, E_text), 0), per pair. (N, D), (N|1, D) -> (N,).

    Computed here from embeddings the sweep already has (torchmetrics' own clip_score cannot run with
    transformers >= 5: its CLIP features call gets an output object, not a tensor). Tested equal to it."""
    return (100 * F.cosine_similarity(image_emb, text_emb, dim=-1)).clamp(min=0)


def directional_clip(out_emb: torch.Tensor, in_emb: torch.Tensor, target_emb: torch.Tensor,
                     source_emb: torch.Tensor) -> torch.Tensor:
    """Directional CLIP similarity: cos(Ê(out) − Ê(in), Ê(target text) − Ê(source text)), Ê = unit-normalized
    embedding. In [-1, 1]; 1 when the image moved exactly along the text edit. out (N, D); the rest (N|1, D).
    An image that did not change (zero direction) scores 0."""
    image_dir = _unit(out_emb) - _unit(in_emb)
    text_dir = _unit(target_emb) - _unit(source_emb)
    return F.cosine_similarity(image_dir, text_dir.expand_as(image_dir), dim=-1, eps=1e-12)


def pixel_metrics(images: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """psnr, ssim and l2 of each image against the (broadcast) reference."""
    return {"psnr": psnr(images, reference), "ssim": ssim(images, reference), "l2": l2(images, reference)}


def _unit(emb: torch.Tensor) -> torch.Tensor:
    return emb / emb.norm(dim=-1, keepdim=True)


def _pair(images: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 copies of the images and of the reference broadcast to their batch; shapes checked."""
    if images.ndim != 4 or reference.ndim != 4 or images.shape[1:] != reference.shape[1:]:
        raise ValueError(f"metric inputs must be (N, C, H, W) of one size, got {tuple(images.shape)} and "
                         f"{tuple(reference.shape)}")
    return images.double(), reference.double().expand_as(images).contiguous()
