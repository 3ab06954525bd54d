"""The declaration of a toy UNet for dispatcher tests: latents (B, 4, 2, 2), text (B, 3, 5)."""
from __future__ import annotations

from cyclediff.export.specs import UNET, ModelSpec, TensorSpec


def toy_unet_spec() -> ModelSpec:
    return ModelSpec(UNET, (TensorSpec("sample", "float32", ("B", 4, 2, 2)),
                            TensorSpec("timestep", "float32", ("B",)),
                            TensorSpec("encoder_hidden_states", "float32", ("B", 3, 5))),
                     (TensorSpec("noise_pred", "float32", ("B", 4, 2, 2)),))
