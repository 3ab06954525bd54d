"""Test helper: a diffusers SD folder -> one .safetensors in the original LDM/CompVis key layout (single-file).

The reverse of diffusers' loaders/single_file_utils.py (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
convert_ldm_clip_checkpoint), written for any block count and layers_per_block so that the tiny checkpoints
round-trip: from_single_file(to_ldm(folder), config=folder) must rebuild exactly the folder's weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_FIXED = {"conv_in": "conv_in", "conv_out": "conv_out", "conv_norm_out": "norm_out"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def to_ldm(folder: Path, out: Path) -> Path:
    """Write `out` (.safetensors) holding the folder's UNet, VAE and text encoder under LDM names."""
    folder = Path(folder)
    state: dict[str, torch.Tensor] = {}
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    for key, value in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        state[UNET_PREFIX + unet_key(key, unet_cfg)] = value
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    for key, value in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        name = vae_key(key, len(vae_cfg["up_block_types"]))
        # LDM's VAE attention projections are 1x1 convs: (C, C) -> (C, C, 1, 1)
        is_proj = ".attn_1." in name and name.endswith((".q.weight", ".k.weight", ".v.weight", ".proj_out.weight"))
        state[VAE_PREFIX + name] = value[:, :, None, None] if is_proj and value.ndim == 2 else value
    for key, value in load_file(folder / "text_encoder" / "model.safetensors").items():
        # transformers >= 5 flattened CLIPTextModel (no "text_model." level); LDM files always have it.
        state[CLIP_PREFIX + (key if key.startswith("text_model.") else "text_model." + key)] = value
    save_file({k: v.contiguous() for k, v in state.items()}, str(out))
    return out


def unet_key(key: str, cfg: dict) -> str:
    """down_blocks.b.resnets.j -> input_blocks.{b(L+1)+j+1}.0, up_blocks.b.* -> output_blocks.{b(L+1)+j}.*, ..."""
    stem, _, leaf = key.rpartition(".")
    if stem in _UNET_FIXED:
        return f"{_UNET_FIXED[stem]}.{leaf}"
    parts = key.split(".")
    per = cfg["layers_per_block"] + 1
    if parts[0] == "mid_block":  # resnets.0, attentions.0, resnets.1 -> middle_block.0, .1, .2 (no sub-slot)
        if parts[1] == "resnets":
            return f"middle_block.{2 * int(parts[2])}.{_unet_resnet(parts[3:])}"
        return f"middle_block.1.{'.'.join(parts[3:])}"
    block, kind, j = int(parts[1]), parts[2], int(parts[3])
    if parts[0] == "down_blocks":
        if kind == "downsamplers":  # down_blocks.b.downsamplers.0.conv.weight -> input_blocks.N.0.op.weight
            return f"input_blocks.{(block + 1) * per}.0.op.{leaf}"
        return _block(f"input_blocks.{block * per + j + 1}", kind, parts[4:])
    if parts[0] == "up_blocks":
        if kind == "upsamplers":  # after the resnet (.0) and, in cross-attention blocks, the attention (.1)
            slot = 2 if "CrossAttn" in cfg["up_block_types"][block] else 1
            return f"output_blocks.{block * per + per - 1}.{slot}.conv.{leaf}"
        return _block(f"output_blocks.{block * per + j}", kind, parts[4:])
    raise KeyError(f"no LDM name for UNet key {key}")


def _block(prefix: str, kind: str, rest: list[str]) -> str:
    """Inside an input/output block the resnet is slot .0 and the attention slot .1."""
    if kind == "resnets":
        return f"{prefix}.0.{_unet_resnet(rest)}"
    if kind == "attentions":
        return f"{prefix}.1.{'.'.join(rest)}"
    raise KeyError(f"no LDM name for UNet {kind} under {prefix}")


def _unet_resnet(rest: list[str]) -> str:
    return ".".join([_UNET_RESNET.get(rest[0], rest[0]), *rest[1:]])


def vae_key(key: str, num_blocks: int) -> str:
    """encoder.down_blocks.i -> encoder.down.i, decoder.up_blocks.i -> decoder.up.{n-1-i}, mid_block -> mid."""
    stem, _, leaf = key.rpartition(".")
    coder, _, rest = stem.partition(".")
    if rest in _VAE_FIXED:
        return f"{coder}.{_VAE_FIXED[rest]}.{leaf}"
    if coder in ("quant_conv", "post_quant_conv"):
        return key
    parts = rest.split(".")
    if parts[0] == "mid_block" and parts[1] == "resnets":
        return f"{coder}.mid.block_{int(parts[2]) + 1}.{_vae_resnet(parts[3:])}.{leaf}"
    if parts[0] == "mid_block":  # attentions.0.<to_q|...>
        sub = ".".join(parts[3:])
        return f"{coder}.mid.attn_1.{_VAE_ATTN[sub]}.{leaf}"
    i = int(parts[1])
    ldm = f"down.{i}" if parts[0] == "down_blocks" else f"up.{num_blocks - 1 - i}"
    if parts[2] == "resnets":
        return f"{coder}.{ldm}.block.{parts[3]}.{_vae_resnet(parts[4:])}.{leaf}"
    sampler = "downsample" if parts[2] == "downsamplers" else "upsample"  # *samplers.0.conv
    return f"{coder}.{ldm}.{sampler}.conv.{leaf}"


def _vae_resnet(rest: list[str]) -> str:
    name = ".".join(rest)
    return "nin_shortcut" if name == "conv_shortcut" else name
