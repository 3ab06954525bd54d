"""Static models on OpenVINO: the UNet and the VAE run one compiled model of static shape, batch 1, per
per-sample shape; every call is run sample by sample into the caller's buffers.

Why static and batch 1 (SD v1.4 UNet, bf16, 2-core EPYC, OpenVINO 2026.4):
- With dynamic shapes the CPU plugin decomposes each ScaledDotProductAttention into MatMul + Softmax + MatMul and
  holds the (8, 4096, 4096) scores of the first level: 1.5 GB per sample at a 64² latent (512² image). A static
  shape lets it fuse attention into one snippet kernel that does not: 59 MiB.
- Static is also faster at 64² (2.4-2.6 s against 3.1-3.5 s per sample) and the same at 32² (0.56-0.62 s).
- Batch 1 is as fast per sample as batch 2 (64²: 2.4-2.6 s against 2.7 s per sample), holds one sample's
  activations whatever the merged batch, and one compiled model serves every batch: the encoder's chunks, the
  guided (2) and unguided (1) decoder steps. On a 2-vCPU Xeon with AMX a compiled batch 2 reads the weights once
  per guided step and was 9 % faster per sample at 32², 0 % at 64² (`benchmarks/ov_profile.py --batch 2`); it
  would need a second compiled model, and so a second copy of the packed weights, for odd batches.
- Each compiled model holds its own packed weights (1.7 GB bf16, 3.4 GB fp32 for SD: they are not shared between
  compiled models), so one is kept: a call at another latent size drops it, then compiles its own (4-8 s for SD,
  page-dropped like any compile: engine/mapped_pages.py).

The VAE (SD v1.4, 512², 2-vCPU Xeon): static, its encoder held 0.61 GB of weights and buffers where the dynamic
graph held 0.91 (decoder 1.06 against 1.49; bf16 0.34 / 0.56 against 0.49 / 0.78), at the same speed; a new image
size compiles in 0.2-0.3 s.

Buffers: a compiled model keeps its intermediate buffers between calls. The VAE encoder's and decoder's are the
largest (0.4-1.2 GB at 512²) and each runs once per edit, so the two share one `ExclusiveBuffers`: before one runs,
the other releases its buffers (CompiledModel.release_memory, 20-35 ms), so they are never held at once; repeated
calls of one model (N decodes of one code) keep its buffers.

Thread safety: one lock per model guards the held compiled model and its infer request (the dispatcher already
runs one model call at a time; the lock covers any other caller). ExclusiveBuffers: its lock guards which model
holds buffers and is never held while a model's lock is taken.
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
    """Inputs and outputs are split along their leading dimension into one part per sample (the UNet's and the
    VAE's B; the attention maps' B*heads). `buffers`: the group whose models never hold buffers at once."""

    def __init__(self, path: Path, spec: ModelSpec, dtype: str, threads: int,
                 buffers: ExclusiveBuffers | None = None):
        super().__init__(spec)
        self.path, self.dtype = path, dtype
        self._config = compile_config(dtype, threads)
        self._buffers = buffers
        self._lock = threading.Lock()
        self._models: dict[SampleShapes, tuple] = {}  # at most one: per-sample shapes -> (compiled, infer request)
        self.compiles = self.releases = 0  # read by tests and benchmarks

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        check_outputs(self.spec, outputs)
        alive = {t.name: feeds[t.name].contiguous() for t in self.spec.inputs}  # must outlive the run
        n = alive[self.spec.inputs[0].name].shape[0]
        shapes = tuple((name, tuple(x.shape[1:])) for name, x in alive.items())
        if self._buffers is not None:
            self._buffers.claim(self)
        with self._lock:
            request = self._request(shapes)
            for i in range(n):
                for name, x in alive.items():
                    request.set_tensor(name, shared(x[i:i + 1]))
                for t in self.spec.outputs:
                    rows = outputs[t.name].shape[0] // n
                    request.set_tensor(t.name, shared(outputs[t.name][i * rows:(i + 1) * rows]))
                request.infer()

    def release_buffers(self) -> None:
        """Free the held model's intermediate buffers (its next call allocates them again); weights stay."""
        with self._lock:
            for compiled, _ in self._models.values():
                compiled.release_memory()
                self.releases += 1

    def _request(self, shapes: SampleShapes):
        """The infer request of the model compiled for these per-sample shapes (compiled now if needed)."""
        if shapes not in self._models:
            self._models.clear()  # frees its packed weights before the next model packs its own
            self._models[shapes] = self._compile(shapes)
        return self._models[shapes][1]

    def _compile(self, shapes: SampleShapes):
        import openvino as ov

        core = ov.Core()
        with PageDropper(weight_files(self.path)):
            model = core.read_model(str(self.path))
            model.reshape({name: [1, *shape] for name, shape in shapes})
            compiled = core.compile_model(model, "CPU", self._config)
            request = compiled.create_infer_request()
        self.compiles += 1
        return compiled, request


class ExclusiveBuffers:
    """Models of which at most one holds its intermediate buffers: a model that is about to run claims them, and
    the model that ran before it releases its own first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: OvSampleModel | None = None

    def claim(self, model: OvSampleModel) -> None:
        with self._lock:
            previous, self._holder = self._holder, model
        if previous is not None and previous is not model:
            previous.release_buffers()  # outside our lock: it takes the previous model's own lock
