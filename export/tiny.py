"""Built-in random-weight SD v1-style checkpoints (`--ckpt tiny`, `tiny-deep`, ...), deterministic from a seed."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from cyclediff.export.tokenizer_files import write_tokenizer


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Architecture + scheduler of one tiny checkpoint; every field changes the weights or the schedule."""

    seed: int = 0
    text_layers: int = 2
    text_hidden: int = 32
    unet_channels: tuple[int, ...] = (32, 64)
    unet_cross_attention: tuple[bool, ...] = (False, True)
    unet_heads: int = 4
    unet_linear_projection: bool = False
    vae_channels: tuple[int, ...] = (16, 32)
    scaling_factor: float = 0.18215
    beta_schedule: str = "scaled_linear"
    timestep_spacing: str = "leading"
    steps_offset: int = 1
    image_size: int = 32

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:16]


# Named presets: the default is what the demo and most tests use; the others vary every configuration
# axis the runtime reads (VAE depth -> latent scale, text depth -> clip_skip, scheduler spacing/offset).
PRESETS: dict[str, TinyConfig] = {
    "tiny": TinyConfig(),
    "tiny-deep": TinyConfig(
        seed=1,
        text_layers=3,
        unet_channels=(16, 32, 32),
        unet_cross_attention=(True, True, False),
        unet_linear_projection=True,
        vae_channels=(8, 16, 16),
        scaling_factor=0.13025,
        image_size=48,
    ),
    "tiny-trailing": TinyConfig(seed=2, beta_schedule="linear", timestep_spacing="trailing", steps_offset=0),
}


def _text_encoder(cfg: TinyConfig, vocab_size: int, pad_id: int, eos_id: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        hidden_size=cfg.text_hidden,
        intermediate_size=2 * cfg.text_hidden,
        num_attention_heads=4,
        num_hidden_layers=cfg.text_layers,
        vocab_size=vocab_size,
        max_position_embeddings=77,
        pad_token_id=pad_id,
        bos_token_id=vocab_size - 2,
        eos_token_id=eos_id,
        projection_dim=cfg.text_hidden,
    )
    return CLIPTextModel(config).eval()


def _unet(cfg: TinyConfig):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.unet_cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.unet_cross_attention))
    return UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (len(cfg.vae_channels) - 1),
        in_channels=4,
        out_channels=4,
        block_out_channels=cfg.unet_channels,
        layers_per_block=1,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=8,
        use_linear_projection=cfg.unet_linear_projection,
    ).eval()


def _vae(cfg: TinyConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=cfg.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=cfg.image_size,
        scaling_factor=cfg.scaling_factor,
    ).eval()


def _scheduler(cfg: TinyConfig):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule=cfg.beta_schedule,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=cfg.steps_offset,
        timestep_spacing=cfg.timestep_spacing,
    )


def save_tiny(cfg: TinyConfig, folder: Path) -> None:
    """Write a complete diffusers-format SD folder (model_index.json, weights, tokenizer, scheduler)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tok_dir = folder / "tokenizer"
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    vocab_size = len(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        text_encoder = _text_encoder(cfg, vocab_size, tokenizer.pad_token_id, tokenizer.eos_token_id)
        unet, vae = _unet(cfg), _vae(cfg)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(cfg),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)


def cache_root() -> Path:
    return Path(os.environ.get("CYCLEDIFF_CACHE", Path.home() / ".cache" / "cyclediff"))


def materialize(name: str) -> Path:
    """Return the folder of built-in checkpoint `name`, building it once (atomically) per config digest."""
    if name not in PRESETS:
        raise ValueError(f"unknown built-in checkpoint {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    folder = cache_root() / "tiny" / f"{name}-{cfg.digest()}"
    if (folder / "model_index.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        save_tiny(cfg, tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder
