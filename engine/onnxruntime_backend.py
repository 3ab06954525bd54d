"""ONNX Runtime backend: runs the exported .onnx files with I/O bound straight to the runtime's tensors."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.export.models import ModelSpec

_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def providers(device: torch.device) -> list[str]:
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise BackendError(
            "backend 'onnxruntime' on cuda needs onnxruntime-gpu (pip install 'cyclediff[gpu]'); "
            f"this onnxruntime has {ort.get_available_providers()}"
        )
    return ["CUDAExecutionProvider"]


class OrtModel(ModelRunner):
    def __init__(self, path: Path, spec: ModelSpec, device: torch.device):
        super().__init__(spec)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=providers(device))
        self.device = device

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        binding = self.session.io_binding()
        alive = [feeds[t.name].contiguous() for t in self.spec.inputs]  # must outlive the run
        for t, tensor in zip(self.spec.inputs, alive):
            self._bind(binding.bind_input, t.name, tensor)
        for t in self.spec.outputs:
            out = outputs[t.name]
            if not out.is_contiguous():
                raise ValueError(f"{self.spec.name}.{t.name}: output buffer must be contiguous")
            self._bind(binding.bind_output, t.name, out)
        self.session.run_with_iobinding(binding)

    def _bind(self, bind, name: str, tensor: torch.Tensor) -> None:
        # Zero-copy: ORT reads/writes the torch storage directly. (shape,) as a list of ints.
        device_type = "cuda" if tensor.is_cuda else "cpu"
        index = tensor.device.index or 0
        bind(name, device_type, index, _NP[tensor.dtype], list(tensor.shape), tensor.data_ptr())
