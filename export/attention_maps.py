"""The optional `unet_attn` graph: the UNet plus every cross-attention layer's probabilities, for Pix2Pix-Zero.

Pix2Pix-Zero's reference pass needs each attn2 layer's (B·heads, hw, 77) attention probabilities. They are
outputs of this second UNet graph (`cyclediff-export --attention-maps`) rather than something patched into a
model at run time, so every backend that runs graphs can run the reference pass. The same wrapper is traced to
ONNX and is the torch backend's module for this model: one definition of the arithmetic for both.
"""
from __future__ import annotations

import copy
import threading

import torch
from torch import nn

from cyclediff.export.specs import Dims, ModelSpec, TensorSpec, specs

UNET_ATTN = "unet_attn"


def explicit_attention(attn, hidden_states: torch.Tensor, context: torch.Tensor | None,
                       attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' Pix2PixZeroAttnProcessor arithmetic. hidden_states (B, hw, C), context (B, 77, D) ->
    output (B, hw, C) and the probabilities (B·heads, hw, 77) it went through."""
    b, n, _ = hidden_states.shape
    mask = attn.prepare_attention_mask(attention_mask, n, b)
    query = attn.to_q(hidden_states)
    if context is None:
        context = hidden_states
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    key, value = attn.to_k(context), attn.to_v(context)
    query, key, value = (attn.head_to_batch_dim(x) for x in (query, key, value))
    probs = attn.get_attention_scores(query, key, mask)
    out = attn.batch_to_head_dim(torch.bmm(probs, value))
    return attn.to_out[1](attn.to_out[0](out)), probs


class MapsProcessor:
    """attn2's processor inside UNetAttentionGraph: explicit attention, probabilities kept as map `index` of
    the running call (a per-thread slot, so concurrent calls on one module keep their own maps)."""

    def __init__(self, index: int, local: threading.local):
        self.index, self.local = index, local

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        out, probs = explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask)
        self.local.maps[self.index] = probs
        return out


class UNetAttentionGraph(nn.Module):
    """(sample, timestep, encoder_hidden_states) -> (noise_pred, attn_0, …, attn_{L-1}).

    Holds its own copy of the UNet's module tree that SHARES the parameters and buffers (no second copy of the
    weights in memory), so setting processors here leaves the plain UNet graph's attention as it was."""

    def __init__(self, unet):
        super().__init__()
        shared = {id(t): t for t in (*unet.parameters(), *unet.buffers())}
        self.unet = copy.deepcopy(unet, shared)
        self.layers = cross_layers(self.unet)  # (heads, downscale) per layer, in call order
        self._local = threading.local()
        for i, (module, _, _) in enumerate(_walk(self.unet)):
            module.set_processor(MapsProcessor(i, self._local))

    def forward(self, sample, timestep, encoder_hidden_states):
        self._local.maps = [None] * len(self.layers)
        try:
            pred = self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
            maps = tuple(self._local.maps)
        finally:
            self._local.maps = None
        if any(m is None for m in maps):
            raise RuntimeError(f"{sum(m is None for m in maps)} of {len(maps)} cross-attention layers did not run")
        return (pred, *maps)


def cross_layers(unet) -> tuple[tuple[int, int], ...]:
    """(heads, downscale of the layer's feature map vs the latent) of every attn2 layer, in call order."""
    layers = tuple((heads, scale) for _, heads, scale in _walk(unet))
    named = [m for name, m in unet.named_modules() if name.endswith("attn2") and hasattr(m, "set_processor")]
    if not layers or len(named) != len(layers):
        raise ValueError(f"found {len(layers)} cross-attention layers by block and {len(named)} by name: "
                         "--attention-maps supports UNet2DConditionModel (SD v1 layout) only")
    return layers


def _walk(unet):
    """(attn2 module, heads, downscale) in the order UNet2DConditionModel.forward calls them: down blocks at
    level i, the mid block at the deepest level, up blocks from the deepest level back up."""
    deepest = len(unet.down_blocks) - 1
    blocks = [(b, i) for i, b in enumerate(unet.down_blocks)] + [(unet.mid_block, deepest)]
    blocks += [(b, deepest - i) for i, b in enumerate(unet.up_blocks)]
    for block, level in blocks:
        for transformer in getattr(block, "attentions", None) or ():
            for tb in transformer.transformer_blocks:
                if getattr(tb, "attn2", None) is not None:
                    yield tb.attn2, tb.attn2.heads, 2 ** level


def spec(d: Dims, layers: tuple[tuple[int, int], ...]) -> ModelSpec:
    """The UNet's I/O plus attn_i: ('B*heads', 'h*w/s²', 77). The derived symbols are products and quotients
    that export/models.py's output_shapes evaluates; ONNX sees them as named dynamic axes."""
    unet = specs(d)["unet"]
    maps = tuple(TensorSpec(f"attn_{i}", "float32", (f"B*{heads}", f"h*w/{scale * scale}", d.text_len))
                 for i, (heads, scale) in enumerate(layers))
    return ModelSpec(UNET_ATTN, unet.inputs, unet.outputs + maps)


def graph(unet) -> UNetAttentionGraph:
    return UNetAttentionGraph(unet).eval()
