"""ClassifierEnergy: −log σ(±logit) of one output of any image classifier (the repo's CelebA-attribute energy)."""
from __future__ import annotations

import torch

from cyclediff.runtime.core.checks import check_number
from cyclediff.runtime.methods.guidance.energies.base import Energy


class ClassifierEnergy(Energy):
    """model(x) -> (B, N) logits; E = −log σ(logit[index]) (positive) or −log(1 − σ(logit[index])) (negative).

    `preprocess` maps the [-1, 1] pixels to what the model expects (default: as they are)."""

    def __init__(self, model: torch.nn.Module, index: int, weight: float = 5.0, positive: bool = True,
                 preprocess=None, name: str = "classifier"):
        super().__init__(weight)
        if not callable(model):
            raise TypeError(f"ClassifierEnergy: model must be a callable torch.nn.Module, got {type(model)}")
        check_number("ClassifierEnergy: index", index, integer=True, low=0)
        self.model, self.index, self.sign = model, index, 1.0 if positive else -1.0
        self.preprocess, self.name = preprocess, name

    def __call__(self, x: torch.Tensor, rng: torch.Generator | None = None) -> torch.Tensor:
        logits = self.model(self.preprocess(x) if self.preprocess is not None else x)  # (B, N)
        if logits.ndim != 2 or not 0 <= self.index < logits.shape[1]:
            raise ValueError(f"ClassifierEnergy: index {self.index} is outside the model's (B, N) = "
                             f"{tuple(logits.shape)} logits")
        # log(1 − σ(l)) = log σ(−l): one stable formula for both signs
        return -torch.nn.functional.logsigmoid(self.sign * logits[:, self.index])
