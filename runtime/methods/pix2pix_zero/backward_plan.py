"""The guided step's memory, planned from shapes before an edit starts: the UNet's forward on the meta device (no
data, no memory, ~0.2 s for SD) with the step's attn2 probes, summing the bytes autograd saves for the input
gradient. SD v1.4 at 512² (batch 2): 13.5 GB, far more than a forward call, so it must be admitted up front.

On the meta device torch always decomposes scaled_dot_product_attention into its math form, which saves the
(heads, T, T) probabilities; on a real device the fused kernel saves only q, k, v, the output and the row
log-sum-exp. The meta pass therefore runs the fused CPU kernel's meta version (which saves exactly that), so the
count matches a real CPU run (tests/test_pix2pix_zero_memory.py).

Locking rule: _CACHE (bytes per architecture and shape) is read and written under _LOCK only; the meta pass,
which swaps torch.nn.functional.scaled_dot_product_attention for meta tensors, runs under _META_LOCK."""
from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cyclediff.runtime.methods.pix2pix_zero import attention_probe
from cyclediff.runtime.methods.pix2pix_zero.attention_probe import Probe

_LOCK, _META_LOCK = threading.Lock(), threading.Lock()
_CACHE: dict[tuple, tuple[int, int]] = {}


def guided_step_bytes(unet: torch.nn.Module, groups: int, latent_shape: tuple[int, ...],
                      text_shape: tuple[int, ...], dtype: torch.dtype, held_steps: int = 1) -> int:
    """Working bytes of one guided step of a diffusers UNet at these shapes: what autograd saves, plus twice the
    largest saved tensor (the backward's gradients in flight), plus the reference maps held (held_steps steps'
    worth: 1 in lockstep, K for store-all)."""
    key = (json.dumps(dict(unet.config), sort_keys=True, default=str), groups, tuple(latent_shape),
           tuple(text_shape), dtype)
    with _LOCK:
        found = _CACHE.get(key)
    if found is None:
        with _META_LOCK, _fused_attention_on_meta():
            found = _on_meta(unet, groups, latent_shape, text_shape, dtype)
        with _LOCK:
            _CACHE[key] = found
    saved, largest, maps = found
    return saved + 2 * largest + held_steps * maps


@contextlib.contextmanager
def _fused_attention_on_meta() -> Iterator[None]:
    """F.scaled_dot_product_attention, for meta tensors only, as the fused CPU kernel (what autograd keeps on a
    real device); every other call (other threads' real tensors, masks, dropout) goes to torch's own."""
    original = F.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if query.device.type != "meta" or attn_mask is not None or dropout_p or kwargs:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, **kwargs)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, is_causal,
                                                                         scale=scale)[0]

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def _on_meta(unet, groups, latent_shape, text_shape, dtype) -> tuple[int, int, int]:
    with torch.device("meta"):
        clone = type(unet).from_config(dict(unet.config))
    if dtype != torch.float32:
        clone = clone.to(dtype)
    local = attention_probe.install(clone)
    sample = torch.zeros((groups, *latent_shape), device="meta", dtype=dtype)
    timestep = torch.full((groups,), 500.0, device="meta")
    embeds = torch.zeros((groups, *text_shape), device="meta", dtype=dtype)
    record = Probe()
    with torch.no_grad(), attention_probe.opened(local, record):
        clone(sample, timestep, embeds)
    saved, largest = count_saved(clone, local, sample, timestep, embeds, record.maps)
    return saved, largest, sum(m.numel() * m.element_size() for m in record.maps)


def count_saved(unet, local, sample, timestep, embeds, reference: list[torch.Tensor]) -> tuple[int, int]:
    """(total, largest) bytes that autograd saves in the guided forward (probe comparing with `reference`),
    each tensor once, the weights excluded (they are held anyway). Works on meta and on real tensors."""
    weights = {id(p) for p in unet.parameters()}
    seen: set[int] = set()
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in weights and id(base) not in seen:
            seen.add(id(base))
            sizes.append(base.numel() * base.element_size())
        return t

    probe = Probe(reference)
    x = sample.detach().clone().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            attention_probe.opened(local, probe):
        unet(x, timestep, embeds)
    return sum(sizes), max(sizes, default=0)
