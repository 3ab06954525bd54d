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
