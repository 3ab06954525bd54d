"""The UNet on OpenVINO: one compiled model of static shape, batch 1, per latent size; every call is run sample
by sample into the caller's buffers.

Why static and batch 1 (SD v1.4 UNet, bf16, 2-core EPYC, OpenVINO 2026.4):
- With dynamic shapes the CPU plugin decomposes each ScaledDotProductAttention into MatMul + Softmax + MatMul and
  holds the (8, 4096, 4096) scores of the first level: 1.5 GB per sample at a 64² latent (512² image). A static
  shape lets it fuse attention into one snippet kernel that does not: 59 MiB.
- Static is also faster at 64² (2.4-2.6 s against 3.1-3.5 s per sample) and the same at 32² (0.56-0.62 s).
- Batch 1 is as fast per sample as batch 2 (64²: 2.4-2.6 s against 2.7 s per sample), holds one sample's
  activations whatever the merged batch, and one compiled model serves every batch: the encoder's chunks, the
  guided (2) and unguided (1) decoder steps.
- Each compiled model holds its own packed weights (1.7 GB bf16, 3.4 GB fp32 for SD: they are not shared between
  compiled models), so one is kept: a call at another latent size drops it, then compiles its own (4-8 s for SD,
  page-dropped like any compile: engine/mapped_pages.py).

Thread safety: one lock guards the held model and its infer request (the dispatcher already runs one model call at a
time; the lock covers any other caller).
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import torch

from cyclediff.engine.base import ModelRunner
from cyclediff.engine.mapped_pages import PageDropper, weight_files
from cyclediff.engine.openvino_backend import check_outputs, compile_config, shared
from cyclediff.export.specs import ModelSpec

SampleShapes = tuple  # ((input name, per-sample shape), ...): what one compiled model is specialized for


class OvSampleModel(ModelRunner):
    """Inputs and outputs are split along their leading dimension into one part per sample (the UNet's B; the
    attention maps' B*heads), one per sample."""

    def __init__(self, path: Path, spec: ModelSpec, dtype: str, threads: int):
        super().__init__(spec)
        self.path, self.dtype = path, dtype
        self._config = compile_config(dtype, threads)
        self._lock = threading.Lock()
        self._models: dict[SampleShapes, object] = {}  # at most one: per-sample shapes -> its infer request
        self.compiles = 0  # read by tests and benchmarks

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        check_outputs(self.spec, outputs)
        alive = {t.name: feeds[t.name].contiguous() for t in self.spec.inputs}  # must outlive the run
        n = alive[self.spec.inputs[0].name].shape[0]
        shapes = tuple((name, tuple(x.shape[1:])) for name, x in alive.items())
        with self._lock:
            request = self._request(shapes)
            for i in range(n):
                for name, x in alive.items():
                    request.set_tensor(name, shared(x[i:i + 1]))
                for t in self.spec.outputs:
                    rows = outputs[t.name].shape[0] // n
                    request.set_tensor(t.name, shared(outputs[t.name][i * rows:(i + 1) * rows]))
                request.infer()

    def _request(self, shapes: SampleShapes):
        """The infer request of the model compiled for these per-sample shapes (compiled now if needed)."""
        if shapes not in self._models:
            self._models.clear()  # frees its packed weights before the next model packs its own
            self._models[shapes] = self._compile(shapes)
        return self._models[shapes]

    def _compile(self, shapes: SampleShapes):
        import openvino as ov

        core = ov.Core()
        with PageDropper(weight_files(self.path)):
            model = core.read_model(str(self.path))
            model.reshape({name: [1, *shape] for name, shape in shapes})
            request = core.compile_model(model, "CPU", self._config).create_infer_request()
        self.compiles += 1
        return request
