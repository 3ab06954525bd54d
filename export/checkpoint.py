"""Resolve `--ckpt` (folder, single file, hub id, alias, built-in) and load its components with diffusers' loaders."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from cyclediff.export import hub_cache, tiny

log = logging.getLogger(__name__)

ALIASES = {"sd-v1-4": "CompVis/stable-diffusion-v1-4", "sd-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5"}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
# Files that define the model: weights, configs, tokenizer. Hashing these identifies a checkpoint.
_HASHED_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".ckpt", ".model")
_COMPONENTS = ("text_encoder", "tokenizer", "unet", "vae", "scheduler")


class CheckpointError(ValueError):
    """A checkpoint that cannot be found, loaded or served; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    """Where a checkpoint lives and what it is. `path` is a diffusers folder or a single weights file."""

    spec: str  # what the user typed
    kind: str  # "builtin" | "folder" | "file" | "hub"
    path: Path
    config: str | None = None  # single file only: diffusers folder or hub id giving the configs

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "path": str(self.path), "config": self.config}


@dataclasses.dataclass
class Components:
    """The pieces of an SD v1.x checkpoint that cyclediff runs."""

    text_encoder: Any
    tokenizer: Any
    unet: Any
    vae: Any
    scheduler_config: dict[str, Any]


def resolve(spec: str, config: str | None = None) -> CheckpointRef:
    """Turn a user's `--ckpt` value into a CheckpointRef, or raise CheckpointError saying what to do."""
    if spec in tiny.PRESETS:
        return CheckpointRef(spec, "builtin", tiny.materialize(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "unet").is_dir():
            raise CheckpointError(f"{path} is a folder but not a diffusers checkpoint (no model_index.json or unet/)")
        return CheckpointRef(spec, "folder", path.resolve())
    if path.suffix in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} does not exist")
        return CheckpointRef(spec, "file", path.resolve(), config)
    if path.exists():
        raise CheckpointError(f"{path}: unsupported checkpoint file type; use a diffusers folder or a .safetensors/.ckpt file")
    return CheckpointRef(spec, "hub", _hub_snapshot(ALIASES.get(spec, spec)))


def _hub_snapshot(repo_id: str) -> Path:
    if repo_id.count("/") != 1 or " " in repo_id:
        raise CheckpointError(
            f"--ckpt {repo_id!r} is not a folder, a .safetensors/.ckpt file, a hub id (owner/name), "
            f"an alias ({', '.join(ALIASES)}) or a built-in ({', '.join(tiny.PRESETS)})"
        )
    return hub_cache.cached_snapshot(repo_id, lambda: CheckpointError(hub_cache.not_cached(
        "hub checkpoint", repo_id, f"on a machine with internet run `hf download {repo_id}` (huggingface_hub's "
        "CLI) and copy the cache here, or pass a local diffusers folder or a single .safetensors/.ckpt file to "
        "--ckpt")))


def content_hash(ref: CheckpointRef) -> str:
    """sha256 over the model-defining files (sorted relative path + bytes): identical checkpoints, identical hash."""
    h = hashlib.sha256()
    for file in _hashed_files(ref):
        h.update(str(file.relative_to(ref.path if ref.kind != "file" else ref.path.parent)).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def _hashed_files(ref: CheckpointRef) -> list[Path]:
    if ref.kind == "file":
        return [ref.path]
    files = [ref.path / "model_index.json"] if (ref.path / "model_index.json").is_file() else []
    for component in _COMPONENTS:
        folder = ref.path / component
        if folder.is_dir():
            files += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _HASHED_SUFFIXES)
    return files


def load(ref: CheckpointRef, loras: tuple = ()) -> Components:
    """Load the four models and the scheduler config, in fp32 on the CPU, fuse `loras` (export/lora.py LoraSpecs,
    in order) into them, then check the method can serve them."""
    if ref.kind == "file":
        comps = _load_single_file(ref)
    else:
        comps = _load_folder(ref.path)
    if loras:
        from cyclediff.export import lora

        lora.fuse(comps, tuple(loras))
    validate(comps)
    return comps


def _load_folder(path: Path) -> Components:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    for component in _COMPONENTS:
        if not (path / component).is_dir():
            raise CheckpointError(f"{path} has no {component}/ folder: not a complete SD v1.x diffusers checkpoint")
    # Said explicitly, diffusers' low_cpu_mem_usage default needs `accelerate` and warns twice when it is missing.
    kw = {"torch_dtype": torch.float32}
    diffusers_kw = {**kw, "low_cpu_mem_usage": _have_accelerate()}
    return Components(
        text_encoder=CLIPTextModel.from_pretrained(path / "text_encoder", **kw).eval(),
        tokenizer=CLIPTokenizer.from_pretrained(path / "tokenizer"),
        unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", **diffusers_kw).eval(),
        vae=AutoencoderKL.from_pretrained(path, subfolder="vae", **diffusers_kw).eval(),
        scheduler_config=json.loads((path / "scheduler" / "scheduler_config.json").read_text()),
    )


def _load_single_file(ref: CheckpointRef) -> Components:
    import torch
    from diffusers import StableDiffusionPipeline

    kw: dict[str, Any] = {"torch_dtype": torch.float32, "safety_checker": None, "requires_safety_checker": False}
    if ref.config:
        kw["config"] = ref.config
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(ref.path), local_files_only=True, **kw)
    except Exception as err:
        raise CheckpointError(f"could not load single-file checkpoint {ref.path}: {err}\n  fix: "
                              f"{_single_file_fix(ref.config)}") from err
    return Components(
        text_encoder=pipe.text_encoder.eval(),
        tokenizer=pipe.tokenizer,
        unet=pipe.unet.eval(),
        vae=pipe.vae.eval(),
        scheduler_config=dict(pipe.scheduler.config),
    )


def _have_accelerate() -> bool:
    import importlib.util

    return importlib.util.find_spec("accelerate") is not None


def _single_file_fix(config: str | None) -> str:
    if config is None:
        return ("pass --config with a diffusers folder of the same architecture (it supplies the configs and "
                "tokenizer offline), or convert the file to a diffusers folder")
    return (f"check that --config {config} is a diffusers folder (or a cached hub id) of the same architecture "
            "as the file, with model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/; or "
            "convert the file to a diffusers folder")


def validate(comps: Components) -> None:
    """Refuse what CycleDiffusion cannot serve, with the reason and the fix."""
    from cyclediff.runtime.core.schedule import SchedulerConfig

    SchedulerConfig.from_diffusers(comps.scheduler_config)  # raises on non-DDIM-compatible configs
    unet_cfg = comps.unet.config
    if unet_cfg.in_channels != comps.vae.config.latent_channels or unet_cfg.out_channels != unet_cfg.in_channels:
        raise CheckpointError(
            f"UNet in/out channels {unet_cfg.in_channels}/{unet_cfg.out_channels} do not match the VAE latent channels "
            f"{comps.vae.config.latent_channels}: inpainting/depth checkpoints are not SD v1.x text-to-image models"
        )
    if unet_cfg.cross_attention_dim != comps.text_encoder.config.hidden_size:
        raise CheckpointError(
            f"UNet cross_attention_dim {unet_cfg.cross_attention_dim} != text encoder width "
            f"{comps.text_encoder.config.hidden_size}: the checkpoint's parts do not belong together"
        )
