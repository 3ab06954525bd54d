"""InversionCode: Pix2Pix-Zero's inverted latents x_T of one image, savable as one safetensors file."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from cyclediff.runtime.core.latent_code import LatentCodeError

FORMAT = "cyclediff.inversion_code/1"
_META = ("prompt", "num_inference_steps", "engine_digest")


@dataclasses.dataclass(frozen=True)
class InversionCode:
    """What `Engine.invert` returns and `Engine.pix2pix_zero(latents=...)` takes.

    latents: (B, C, h, w) float32 — the regularized DDIM inversion of the image(s) (diffusers' `.latents`).
    images: the inverted latents decoded (diffusers' `.images`), or None; never saved.
    """

    latents: torch.Tensor
    prompt: str
    num_inference_steps: int
    engine_digest: str  # Manifest.digest of the export that inverted it
    images: Any = None

    @property
    def latent_hw(self) -> tuple[int, int]:
        return int(self.latents.shape[2]), int(self.latents.shape[3])

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save

        from cyclediff.export.atomic_files import atomic_write_bytes

        meta = {k: getattr(self, k) for k in _META}
        tensors = {"latents": self.latents.detach().cpu().contiguous()}
        atomic_write_bytes(Path(path), save(tensors, metadata={"format": FORMAT, "meta": json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | Path) -> InversionCode:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta_raw = f.metadata() or {}
                latents = f.get_tensor("latents")
        except Exception as err:
            raise LatentCodeError(f"{path} is not a cyclediff inversion code file ({err}); make one with "
                                  "`cyclediff-run --method pix2pix-zero --save-code` or Engine.invert(...).save") \
                from err
        if meta_raw.get("format") != FORMAT:
            raise LatentCodeError(f"{path}: format {meta_raw.get('format')!r}, expected {FORMAT!r} (a CycleDiffusion "
                                  "code is decoded with --method cycle)")
        return cls(latents=latents, **json.loads(meta_raw["meta"]))


def check_code(code: InversionCode, manifest, latent_hw: tuple[int, int] | None) -> None:
    """Refuse a code from another export (Manifest.made), with the wrong channels, or of another size than asked."""
    latent_channels = manifest.dims.latent_channels
    if not manifest.made(code.engine_digest):
        raise LatentCodeError("this inversion code was made by another engine export (another checkpoint); invert "
                              "the image again with this engine")
    if code.latents.ndim != 4 or code.latents.shape[1] != latent_channels:
        raise LatentCodeError(f"inversion latents have shape {tuple(code.latents.shape)}; this engine needs "
                              f"(B, {latent_channels}, h, w)")
    if latent_hw is not None and code.latent_hw != latent_hw:
        raise LatentCodeError(f"inversion latents are {code.latent_hw[1]}x{code.latent_hw[0]} (width x height) but "
                              f"height/width ask for {latent_hw[1]}x{latent_hw[0]} latents; drop height/width or "
                              "invert the image at that size")
