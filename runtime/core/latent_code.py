"""LatentCode: the DPM-Encoder's Gaussian code (x_T, z_T … z_1) of a batch, saved as one safetensors file."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from cyclediff.runtime.core.latent_space import LatentSpace

FORMAT = "cyclediff.latent_code/1"


class LatentCodeError(ValueError):
    """A code that does not fit this engine or call; the message says why."""


@dataclasses.dataclass(frozen=True)
class LatentCode:
    """Decodable with any target prompt by the engine that made it, and by any export whose latent space is
    compatible (latent_space.py: e.g. a fine-tune of the same base).

    x_T: (B, C, h, w) float32 — the noised latents both branches start from.
    noises: (K, B, C, h, w) float32 — z_t recorded at each of the K steps (zeros when eta = 0).
    """

    x_T: torch.Tensor
    noises: torch.Tensor
    timesteps: tuple[int, ...]
    num_inference_steps: int
    strength: float
    eta: float
    source_prompts: tuple[str, ...]
    source_guidance_scale: float
    engine_digest: str  # Manifest.digest of the export that encoded it
    # What the numbers mean (layout, schedule, which VAE and text encoder); None in codes saved before 0.2 and by
    # the C++ host: those decode only on the export that made them.
    space: LatentSpace | None = None

    @property
    def batch(self) -> int:
        return int(self.x_T.shape[0])

    @property
    def latent_hw(self) -> tuple[int, int]:
        return int(self.x_T.shape[2]), int(self.x_T.shape[3])

    def item(self, i: int) -> "LatentCode":
        """The code of item i alone (batch 1)."""
        return dataclasses.replace(self, x_T=self.x_T[i: i + 1], noises=self.noises[:, i: i + 1],
                                   source_prompts=(self.source_prompts[i],))

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save

        from cyclediff.export.atomic_files import atomic_write_bytes

        meta = {k: getattr(self, k) for k in ("timesteps", "num_inference_steps", "strength", "eta",
                                               "source_prompts", "source_guidance_scale", "engine_digest")}
        if self.space is not None:
            meta["space"] = self.space.to_json()
        tensors = {"x_T": self.x_T.detach().cpu().contiguous(), "noises": self.noises.detach().cpu().contiguous()}
        atomic_write_bytes(Path(path), save(tensors, metadata={"format": FORMAT, "meta": json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | Path) -> "LatentCode":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta_raw = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in ("x_T", "noises")}
        except Exception as err:
            raise LatentCodeError(f"{path} is not a cyclediff latent code file ({err})") from err
        if meta_raw.get("format") != FORMAT:
            raise LatentCodeError(f"{path}: format {meta_raw.get('format')!r}, expected {FORMAT!r}")
        meta = json.loads(meta_raw["meta"])
        meta["timesteps"] = tuple(meta["timesteps"])
        meta["source_prompts"] = tuple(meta["source_prompts"])
        if meta.get("space") is not None:
            meta["space"] = LatentSpace.from_json(meta["space"])
        return cls(**tensors, **meta)
