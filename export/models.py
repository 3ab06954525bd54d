"""The four exported models' torch wrappers (their I/O declarations live in export/specs.py).

Every graph is pure fp32 arithmetic on fixed-role tensors; the random draws, scaling factors and scheduler
math stay in the runtime so that every backend shares them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from cyclediff.export.specs import TEXT_ENCODER, UNET, VAE_DECODER, VAE_ENCODER, Dims, ModelSpec


class TextEncoderGraph(nn.Module):
    def __init__(self, text_encoder):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.text_encoder(input_ids, output_hidden_states=True)
        # transformers < 5 nests the layers under .text_model; 5.x flattened them.
        norm = getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm
        return torch.stack([norm(h) for h in out.hidden_states], dim=1)


class UNetGraph(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


class VaeEncoderGraph(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        dist = self.vae.encode(image).latent_dist  # logvar clamped to [-30, 20] inside
        return dist.mean, dist.std


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]


WRAPPERS: dict[str, tuple[str, Callable[..., nn.Module]]] = {
    TEXT_ENCODER: ("text_encoder", TextEncoderGraph),
    UNET: ("unet", UNetGraph),
    VAE_ENCODER: ("vae", VaeEncoderGraph),
    VAE_DECODER: ("vae", VaeDecoderGraph),
}


def graphs(components) -> dict[str, nn.Module]:
    """The four torch modules the exported graphs are traced from (and the torch backend runs)."""
    return {name: make(getattr(components, attr)).eval() for name, (attr, make) in WRAPPERS.items()}


def sample_inputs(spec: ModelSpec, d: Dims, batch: int, latent_hw: tuple[int, int], seed: int = 0):
    """Random inputs of the declared shapes (for tracing and for ONNX-vs-torch verification)."""
    g = torch.Generator().manual_seed(seed)
    env = {"B": batch, "h": latent_hw[0], "w": latent_hw[1], "H": latent_hw[0] * d.vae_scale,
           "W": latent_hw[1] * d.vae_scale}
    feeds = {}
    for t in spec.inputs:
        shape = tuple(env[s] if isinstance(s, str) else s for s in t.shape)
        if t.dtype == "int64":
            feeds[t.name] = torch.randint(0, 256, shape, generator=g)
        elif t.name == "timestep":
            feeds[t.name] = torch.randint(1, 1000, shape, generator=g).float()
        else:
            feeds[t.name] = torch.randn(shape, generator=g)
    return feeds
