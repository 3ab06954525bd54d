"""The differentiable UNet and VAE decoder of an engine: the torch backend's own modules, or the checkpoint's.

Gradients need autograd through the UNet and the VAE decoder. ONNX Runtime and TensorRT run forward only, so
for them the torch modules are loaded from the checkpoint the export records (checked to be the exported one);
those backends still do every forward-only part (text encoding, the final decode)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from cyclediff.export.manifest import Manifest
from cyclediff.export.specs import UNET, VAE_DECODER
from cyclediff.runtime.methods.guidance.config import GuidanceError


@dataclasses.dataclass(frozen=True)
class TorchParts:
    """unet(sample, t, emb) -> eps and vae_decoder(latent / sf) -> pixels: export wrappers, fp32, eval mode."""

    unet: torch.nn.Module
    vae_decoder: torch.nn.Module


def from_runners(runners: dict, backend: str, dtype: str) -> TorchParts | None:
    """The torch backend's fp32 modules, shared with the engine (no second copy); None for other backends."""
    if backend != "torch" or dtype != "fp32":
        return None
    return TorchParts(runners[UNET].module, runners[VAE_DECODER].module)


def from_checkpoint(manifest: Manifest, backend: str, device: torch.device, verify: str = "fast") -> TorchParts:
    """Load the recorded checkpoint's UNet and VAE as torch modules, or say why guidance cannot run here."""
    from cyclediff.export import checkpoint, integrity, models, tiny

    rec = manifest.checkpoint
    ref = checkpoint.CheckpointRef(rec["spec"], rec["kind"], Path(rec["path"]), rec.get("config"))
    if ref.kind == "builtin" and not ref.path.exists():
        ref = checkpoint.CheckpointRef(ref.spec, ref.kind, tiny.materialize(ref.spec))  # deterministic rebuild
    why = (f"guidance needs gradients through the UNet and VAE decoder, which the {backend!r} backend cannot "
           f"compute (it runs forward only), so they are loaded as torch modules from the exported checkpoint "
           f"{ref.path}")
    if not ref.path.exists():
        raise GuidanceError(f"{why}, which is gone; restore it there (or re-export from where it is now)")
    try:
        integrity.check_checkpoint(ref, manifest, verify, "re-run `cyclediff-export` from the current checkpoint")
    except ValueError as err:
        raise GuidanceError(f"{why}: {err}") from err
    from cyclediff.export import lora
    from cyclediff.runtime import verbosity

    try:
        loras = lora.recorded(manifest, "re-run `cyclediff-export`")  # fused again, as at export
    except ValueError as err:
        raise GuidanceError(f"{why}: {err}") from err
    with verbosity.quiet_loading():  # no 'Loading weights' bar unless --verbose
        graphs = models.graphs(checkpoint.load(ref, loras))
    return TorchParts(graphs[UNET].to(device), graphs[VAE_DECODER].to(device))
