"""PyTorch backend: runs the checkpoint's own modules (the export wrappers) eagerly, fp32 or fp16."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.export.specs import ModelSpec


class TorchModel(ModelRunner):
    """fp16/bf16 keep the runtime's fp32 buffers: float inputs are cast in, outputs cast back on copy-out."""

    def __init__(self, module: torch.nn.Module, spec: ModelSpec, device: torch.device, dtype: str = "fp32"):
        super().__init__(spec)
        self.compute = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype, torch.float32)
        self.module = module.to(device=device, dtype=self.compute).eval()

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        args = (self._cast(feeds[t.name]) for t in self.spec.inputs)
        with torch.inference_mode():
            result = self.module(*args)
        results = result if isinstance(result, tuple) else (result,)
        for t, value in zip(self.spec.outputs, results):
            outputs[t.name].copy_(value)

    def _cast(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.compute) if x.is_floating_point() and x.dtype != self.compute else x
