"""Cross-attention probes on a torch UNet: record each attn2 layer's probabilities, or sum their L2 distance
to recorded ones. Installed once per UNet; a probe is active only in the thread that opened it, so other
threads' calls on the same shared module run the unchanged processors."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from cyclediff.export.attention_maps import explicit_attention

_INSTALL_LOCK = threading.Lock()


class Probe:
    """One UNet call's view of its attn2 layers. record: `maps` fills with (B·heads, hw, 77) probabilities
    in layer call order. compare: `maps` holds a recorded step's maps and `loss` accumulates
    Σ_layers mean_{B·heads}( Σ_{query, token} (A − A_ref)² ), as diffusers' Pix2PixZeroL2Loss."""

    def __init__(self, reference: list[torch.Tensor] | None = None):
        self.reference = reference
        self.maps: list[torch.Tensor] = []
        self.loss: torch.Tensor | None = None

    def see(self, probs: torch.Tensor) -> None:
        if self.reference is None:
            self.maps.append(probs.detach())
            return
        ref = self.reference[len(self.maps)].to(probs.device)
        self.maps.append(ref)  # only counts the layers; the reference's memory is the caller's
        term = ((probs - ref) ** 2).sum((1, 2)).mean(0)
        self.loss = term if self.loss is None else self.loss + term


class ProbeProcessor:
    """attn2's processor: the original one unless this thread has a Probe open, else explicit attention
    (the reference's Pix2PixZeroAttnProcessor arithmetic) with the probabilities shown to the probe."""

    def __init__(self, original, local: threading.local):
        self.original, self.local = original, local

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        probe = getattr(self.local, "probe", None)
        if probe is None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        return _explicit(attn, hidden_states, encoder_hidden_states, attention_mask, probe)


def _explicit(attn, hidden_states, context, attention_mask, probe: Probe) -> torch.Tensor:
    """hidden_states (B, hw, C), context (B, 77, D) -> (B, hw, C), through (B·heads, hw, 77) probabilities: the
    arithmetic of the exported unet_attn graph (one definition, export/attention_maps.py)."""
    out, probs = explicit_attention(attn, hidden_states, context, attention_mask)
    probe.see(probs)
    return out


def install(unet: torch.nn.Module) -> threading.local:
    """Wrap every cross-attention (attn2) processor of a diffusers UNet once; returns the thread-local slot.
    Also turns off the weights' requires_grad: the guided step needs only the input gradient, and weights
    that require grad would make autograd keep extra activations (inference calls run under inference_mode
    and do not care)."""
    with _INSTALL_LOCK:
        local = getattr(unet, "_cyclediff_probe", None)
        if local is not None:
            return local
        local = threading.local()
        layers = [m for name, m in unet.named_modules() if name.endswith("attn2") and hasattr(m, "set_processor")]
        if not layers:
            raise ValueError("this UNet has no cross-attention (attn2) layers for Pix2Pix-Zero's guidance")
        for module in layers:
            module.set_processor(ProbeProcessor(module.processor, local))
        unet.requires_grad_(False)
        object.__setattr__(unet, "_cyclediff_probe", local)  # a plain attribute, not a submodule
        return local


@contextlib.contextmanager
def opened(local: threading.local, probe: Probe) -> Iterator[Probe]:
    """Make `probe` see this thread's attn2 calls for the duration."""
    local.probe = probe
    try:
        yield probe
    finally:
        local.probe = None
