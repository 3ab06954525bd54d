"""PyTorch backend: runs the checkpoint's own modules (the export wrappers) eagerly."""
from __future__ import annotations

from typing import Mapping

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.export.models import ModelSpec


class TorchModel(ModelRunner):
    def __init__(self, module: torch.nn.Module, spec: ModelSpec, device: torch.device):
        super().__init__(spec)
        self.module = module.to(device).eval()

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        with torch.inference_mode():
            result = self.module(*(feeds[t.name] for t in self.spec.inputs))
        results = result if isinstance(result, tuple) else (result,)
        for t, value in zip(self.spec.outputs, results):
            outputs[t.name].copy_(value)
