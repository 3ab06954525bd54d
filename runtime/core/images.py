"""Image pre/post-processing, numerically identical to diffusers' VaeImageProcessor for SD pipelines."""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import PIL.Image
import torch


class ImageError(ValueError):
    """An image the engine cannot take; the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Preprocessed input: pixels (B, 3, H, W) in [-1, 1], or latents (B, C, h, w) passed through as-is."""

    tensor: torch.Tensor
    is_latent: bool


def preprocess(image: Any, vae_scale: int, latent_channels: int) -> Prepared:
    """PIL / numpy / torch image or list of them -> one batch tensor, as VaeImageProcessor.preprocess."""
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    if not items:
        raise ImageError("image is an empty list; pass at least one image")
    kinds = {type(_kind(i)) for i in items}
    if len(kinds) > 1:
        raise ImageError("image list mixes types; pass all PIL images, all numpy arrays or all torch tensors")
    first = items[0]
    if isinstance(first, PIL.Image.Image):
        return Prepared(_normalize(_from_pil(items, vae_scale)), False)
    if isinstance(first, np.ndarray):
        return Prepared(_normalize(_resize(_from_numpy(items), vae_scale)), False)
    batch = _from_torch(items)
    if batch.shape[1] == latent_channels:
        return Prepared(batch.float(), True)
    return Prepared(_normalize(_resize(batch, vae_scale)), False)


def _kind(item: Any) -> Any:
    if isinstance(item, (PIL.Image.Image, np.ndarray, torch.Tensor)):
        return item
    raise ImageError(
        f"unsupported image type {type(item).__name__}; pass a PIL.Image, a numpy array (H, W, 3) in [0, 1] "
        "or uint8, or a torch tensor (3, H, W) in [0, 1] (a 4-channel tensor is taken as latents)"
    )


def _from_pil(images: list[PIL.Image.Image], vae_scale: int) -> torch.Tensor:
    arrays = []
    for img in images:
        if img.mode != "RGB":
            raise ImageError(f"image mode {img.mode!r} is not supported; convert it first: image.convert('RGB')")
        w, h = floor_size(img.width, img.height, vae_scale)
        # PIL returns a copy when the size is unchanged, exactly as diffusers' resize does.
        arrays.append(np.array(img.resize((w, h), resample=PIL.Image.LANCZOS)).astype(np.float32) / 255.0)
    if len({a.shape for a in arrays}) > 1:
        raise ImageError(f"images in one batch must share a size, got {sorted({a.shape[:2] for a in arrays})}")
    return torch.from_numpy(np.stack(arrays, axis=0).transpose(0, 3, 1, 2))


def _from_numpy(arrays: list[np.ndarray]) -> torch.Tensor:
    batch = np.concatenate(arrays, axis=0) if arrays[0].ndim == 4 else np.stack(arrays, axis=0)
    if batch.dtype == np.uint8:  # 0..255 pixels: the common case diffusers does not scale; we do
        batch = batch.astype(np.float32) / 255.0
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ImageError(f"numpy image must be (H, W, 3) or (B, H, W, 3), got shape {tuple(batch.shape)}")
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).float()


def _from_torch(tensors: list[torch.Tensor]) -> torch.Tensor:
    batch = torch.cat(tensors, dim=0) if tensors[0].ndim == 4 else torch.stack(tensors, dim=0)
    if batch.ndim != 4:
        raise ImageError(f"torch image must be (C, H, W) or (B, C, H, W), got shape {tuple(batch.shape)}")
    return batch.detach().cpu()


def floor_size(width: int, height: int, vae_scale: int) -> tuple[int, int]:
    """The size the image is cut to (each side floored to a multiple of vae_scale, as diffusers), or ImageError."""
    w, h = width - width % vae_scale, height - height % vae_scale
    if w == 0 or h == 0:
        raise ImageError(f"image {width}x{height} is smaller than {vae_scale} pixels on a side; pass a larger image")
    return w, h


def _resize(batch: torch.Tensor, vae_scale: int) -> torch.Tensor:
    if batch.shape[1] != 3:
        raise ImageError(f"image has {batch.shape[1]} channels; pass RGB (3 channels)")
    w, h = floor_size(batch.shape[3], batch.shape[2], vae_scale)
    # diffusers always calls interpolate (default 'nearest'): identity when the size already fits.
    return torch.nn.functional.interpolate(batch.float(), size=(h, w))


def _normalize(batch: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] (uint8 already divided by 255) -> [-1, 1]."""
    if not torch.isfinite(batch).all():
        raise ImageError("image contains NaN or infinite values")
    if batch.numel() and batch.max() > 1:
        # A float image in 0..255 would be taken as far out of range and edited into noise, silently.
        raise ImageError(f"a float image must hold values in [0, 1], got values up to {float(batch.max()):g}; "
                         "divide it by 255 (or pass it as uint8)")
    if batch.min() < 0:
        warnings.warn("image tensor in [-1, 1] is taken as already normalized (diffusers' deprecated range)",
                      FutureWarning, stacklevel=3)
        return batch.contiguous()
    return (2.0 * batch - 1.0).contiguous()


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """VAE output (B, 3, H, W) -> float32 (B, H, W, 3) in [0, 1]."""
    return (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()


def to_pil(images: np.ndarray) -> list[PIL.Image.Image]:
    return [PIL.Image.fromarray(img) for img in (images * 255).round().astype("uint8")]


def postprocess(image: torch.Tensor, output_type: str) -> Any:
    if output_type == "pt":
        return (image / 2 + 0.5).clamp(0, 1)
    array = to_numpy(image)
    return array if output_type == "np" else to_pil(array)
