"""LoRAs fused at export (`cyclediff-export --lora FILE[:SCALE]`), with diffusers' own loader and fusion.

Each LoRA is loaded with `load_lora_weights` (diffusers/peft files and the community single-file formats it
converts: kohya, A1111, ...), fused into the weights with `fuse_lora(lora_scale=SCALE)`, then unloaded, one after
the other, so the exported graphs are plain fused models. The manifest records each file's sha256 and scale; the
export's reuse keys and the torch backend's reload (which fuses them again, after checking the hashes) use them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from cyclediff.export.checkpoint import CheckpointError, Components
from cyclediff.export.manifest import sha256_files

SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
MODELS = ("unet", "text_encoder", "unet_attn")  # the exported graphs a LoRA changes (never the VAE's)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    file: Path
    scale: float = 1.0
    sha256: str = ""  # filled by checked()

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.file), "sha256": self.sha256, "scale": self.scale}


def parse(text: str) -> LoraSpec:
    """'FILE' or 'FILE:SCALE' (the last ':' splits only when what follows is a number, so paths may hold ':')."""
    path, sep, tail = text.rpartition(":")
    scale = 1.0
    if sep:
        try:
            scale = float(tail)
        except ValueError:
            if Path(text).suffix.lower() not in SUFFIXES:
                raise CheckpointError(f"--lora {text!r}: the scale {tail!r} after ':' is not a number; write "
                                      "FILE:SCALE, e.g. style.safetensors:0.8") from None
            path = text
    else:
        path = text
    if not math.isfinite(scale):
        raise CheckpointError(f"--lora {text!r}: the scale must be a finite number, got {scale}")
    return LoraSpec(Path(path).expanduser(), scale)


def checked(spec: LoraSpec) -> LoraSpec:
    """The spec with its file's sha256, after checking the file exists and is a weights file diffusers reads."""
    if not spec.file.is_file():
        raise CheckpointError(f"--lora {spec.file}: no such file")
    if spec.file.suffix.lower() not in SUFFIXES:
        raise CheckpointError(f"--lora {spec.file}: not a LoRA weights file ({', '.join(SUFFIXES)})")
    _state_dict(spec.file)  # a corrupt file fails here, before any model is loaded
    return dataclasses.replace(spec, file=spec.file.resolve(), sha256=sha256_files([spec.file]))


def _state_dict(path: Path) -> dict:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - safetensors and torch raise many types for a damaged file
        raise CheckpointError(f"--lora {path}: cannot be read as LoRA weights ({err}); pass a .safetensors LoRA "
                              "(diffusers/peft or a community format diffusers reads)") from None


def fuse(comps: Components, specs: tuple[LoraSpec, ...]) -> None:
    """Fuse each LoRA into comps' UNet / text encoder in place, in order, with diffusers' loader."""
    if not specs:
        return
    pipe = _pipeline(comps)
    for i, spec in enumerate(specs):
        name = f"lora{i}"
        try:
            with _diffusers_silent():  # it logs the failure itself, then raises: say it once, below
                pipe.load_lora_weights(str(spec.file), adapter_name=name)
        except Exception as err:  # noqa: BLE001 - a LoRA of another architecture: shape errors, key errors
            raise CheckpointError(f"--lora {spec.file}: does not fit this checkpoint ({_first(err)}); pass a LoRA "
                                  "trained for this architecture (SD v1.x)") from None
        if not any(name in names for names in pipe.get_list_adapters().values()):
            raise CheckpointError(f"--lora {spec.file}: none of its weights match a module of this checkpoint "
                                  "(a LoRA for another architecture?); pass a LoRA trained for SD v1.x")
        pipe.fuse_lora(lora_scale=spec.scale, adapter_names=[name])
        pipe.unload_lora_weights()


def _pipeline(comps: Components):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(vae=comps.vae, text_encoder=comps.text_encoder, tokenizer=comps.tokenizer,
                                   unet=comps.unet, scheduler=DDIMScheduler.from_config(comps.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def reuse_hash(content_hash: str, specs: tuple[LoraSpec, ...]) -> str:
    """What the exported weights depend on: the checkpoint's bytes and, in order, each LoRA's bytes and scale."""
    if not specs:
        return content_hash  # exports without LoRAs keep their reuse keys
    blob = json.dumps([content_hash, [[s.sha256, s.scale] for s in specs]])
    return hashlib.sha256(blob.encode()).hexdigest()


def recorded(manifest, fix: str) -> tuple[LoraSpec, ...]:
    """The manifest's LoRAs, each file checked against its recorded sha256 (the torch backend fuses them again)."""
    specs = []
    for entry in manifest.checkpoint.get("loras", []):
        spec = LoraSpec(Path(entry["file"]), float(entry["scale"]), entry["sha256"])
        if not spec.file.is_file():
            raise CheckpointError(f"the export's LoRA {spec.file} is gone; restore it there or {fix}")
        if sha256_files([spec.file]) != spec.sha256:
            raise CheckpointError(f"the export's LoRA {spec.file} changed since the export (sha256 differs); {fix}")
        specs.append(spec)
    return tuple(specs)


@contextlib.contextmanager
def _diffusers_silent():
    from diffusers.utils import logging as dlog

    level = dlog.get_verbosity()
    dlog.set_verbosity(dlog.CRITICAL)
    try:
        yield
    finally:
        dlog.set_verbosity(level)


def _first(err: BaseException) -> str:
    """The line that says why (a size mismatch names the module and both shapes), not torch's header."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    telling = [line for line in lines if "size mismatch" in line or "Unexpected key" in line or "Missing key" in line]
    return ((telling or lines or [type(err).__name__])[0])[:300]
