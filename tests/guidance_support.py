"""Helpers shared by the guidance tests: a tiny engine, a small classifier, codes."""
from __future__ import annotations

import torch

from cyclediff.runtime.engine import Engine


def tiny_net(seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    """A small smooth image classifier: (B, 3, H, W) -> (B, 3) logits."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.SiLU(), torch.nn.Conv2d(8, 8, 3),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    return net.to(dtype).eval().requires_grad_(False)


def load(folder, backend: str = "torch") -> Engine:
    return Engine.load(folder, backend=backend, progress=False)


def prior_code(engine: Engine, steps: int = 4, eta: float = 0.0, seed: int = 0, prompts=("a cat",)):
    return engine.guidance.start_code(tuple(prompts), None, None, steps, eta, torch.Generator().manual_seed(seed))


def saved_bytes(engine: Engine, steps: int, checkpoint: bool, weights_and_views_once: bool = False) -> int:
    """Bytes autograd keeps for backward after G's forward (tensors saved inside a checkpointed step are not kept:
    the checkpoint recomputes them, so the hook never sees them). weights_and_views_once: weights left out and a
    view counted as its base, once (what memory really holds); else every saved tensor at its own size."""
    code = prior_code(engine, steps=steps, eta=0.0)
    decoder = engine.guidance.sampler(code, "a cat", 7.5, None, checkpoint)
    weights = {id(p) for m in (decoder.unet, decoder.vae_decoder) for p in m.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):  # returns t itself: only the counting looks at the base
        held = t._base if weights_and_views_once and t._base is not None else t
        if not (weights_and_views_once and id(held) in weights):
            seen[id(held)] = held.numel() * held.element_size()
        return t

    x_T = code.x_T.clone().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = decoder(x_T, None).sum()  # held: its graph keeps every saved tensor alive (ids stay unique)
    total = sum(seen.values())
    del out
    return total
