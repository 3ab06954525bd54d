"""LatentSpace: what a LatentCode means, so that another export can decode it (the paper's "common latent space").

A code (x_T, z_T … z_1) made by export A decodes on export B when the numbers mean the same thing there: the same
latent layout (channels, VAE downscale, VAE scaling factor), the same training schedule (betas, number of
training timesteps, DDIM timestep rule: prediction type is always epsilon, export refuses the others), and the same
text-embedding width. A different VAE or text encoder is allowed, but said: the code lives in A's latent space,
and B's VAE decodes it as if it were B's own.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from cyclediff.export.specs import TEXT_ENCODER, VAE_DECODER, VAE_ENCODER


@dataclasses.dataclass(frozen=True)
class LatentSpace:
    latent_channels: int
    vae_scale: int  # image side / latent side
    vae_scaling_factor: float
    schedule: dict[str, Any]  # SchedulerConfig.to_json()
    text_width: int  # D of the text embeddings the UNet attends to
    vae: str  # sha256 over the VAE encoder's and decoder's graphs
    text_encoder: str  # sha256 over the text encoder's graph and the tokenizer files

    @classmethod
    def of(cls, manifest) -> "LatentSpace":
        d, models = manifest.dims, manifest.models
        vae = _join(models[VAE_ENCODER].sha256, models[VAE_DECODER].sha256)
        text = _join(models[TEXT_ENCODER].sha256, *(f"{k}={v}" for k, v in sorted(manifest.tokenizer_files.items())))
        return cls(d.latent_channels, d.vae_scale, float(manifest.vae_scaling_factor), dict(manifest.scheduler),
                   d.text_width, vae, text)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "LatentSpace":
        return cls(**d)

    def incompatibilities(self, other: "LatentSpace") -> list[str]:
        """Why a code of this space cannot be decoded in `other` (empty: it can), in the words "the code's export"
        (this space) and "this one" (other)."""
        why = [f"{name} {mine} in the code's export, {theirs} in this one" for name, mine, theirs in (
            ("latent channels", self.latent_channels, other.latent_channels),
            ("VAE downscale", self.vae_scale, other.vae_scale),
            ("VAE scaling factor", self.vae_scaling_factor, other.vae_scaling_factor),
            ("text embedding width", self.text_width, other.text_width)) if mine != theirs]
        keys = sorted(k for k in {*self.schedule, *other.schedule} if self.schedule.get(k) != other.schedule.get(k))
        why += [f"training schedule {k} {_short(self.schedule.get(k))} in the code's export, "
                f"{_short(other.schedule.get(k))} in this one" for k in keys]
        return why

    def differences(self, other: "LatentSpace") -> list[str]:
        """What differs but is allowed (said to the user): another VAE, another text encoder."""
        return [what for what, same in (("VAE", self.vae == other.vae),
                                        ("text encoder", self.text_encoder == other.text_encoder)) if not same]


def _join(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
