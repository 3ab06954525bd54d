"""Pix2Pix-Zero's reference pass: one forward that gives the noise prediction and every attn2 layer's maps.

Two sources, the same numbers: the export's `unet_attn` graph (export/attention_maps.py) on whatever backend
loaded it, or (exports without it) attn2 probes on the torch backend's UNet (attention_probe.py).
"""
from __future__ import annotations

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import Dims, output_shapes
from cyclediff.runtime.methods.pix2pix_zero.attention_probe import Probe


class GraphMaps:
    """The unet_attn runner (dispatched): noise_pred plus attn_0 … attn_{L-1} as graph outputs."""

    def __init__(self, runner: ModelRunner, dims: Dims):
        self.runner, self.dims = runner, dims

    def __call__(self, sample: torch.Tensor, t: int, embeds: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """sample (g, C, h, w), embeds (g, 77, D) -> noise prediction (g, C, h, w) and maps (g·heads, hw_l, 77)
        per layer, fresh buffers each call (a store-all trajectory keeps them)."""
        feeds = {"sample": sample.contiguous(), "encoder_hidden_states": embeds.contiguous(),
                 "timestep": torch.full((sample.shape[0],), float(t), device=sample.device)}
        shapes = output_shapes(self.runner.spec, {k: tuple(v.shape) for k, v in feeds.items()}, self.dims)
        outputs = {name: torch.empty(shape, device=sample.device) for name, shape in shapes.items()}
        self.runner(feeds, outputs)
        return outputs["noise_pred"], [outputs[t.name] for t in self.runner.spec.outputs[1:]]


class ProbeMaps:
    """attn2 probes on a torch UNet (attention_guidance.TorchUNet): the maps in the UNet's compute dtype."""

    def __init__(self, unet):
        self.unet = unet

    def __call__(self, sample: torch.Tensor, t: int, embeds: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        probe = Probe()
        with torch.no_grad():
            pred = self.unet(sample, t, embeds, probe)
        return pred, probe.maps
