"""OpenVINO backend: the exported graphs on OpenVINO's CPU plugin, fp32 (exact) or bf16 (the fast CPU mode).

The text encoder runs one compiled model (OvModel), with the export's dynamic batch axis: the plugin packs its
weights on the first call and every batch reuses them. The UNet and the VAE run one static model per per-sample
shape (engine/openvino_static.py says why). Compiles and first calls drop the mapped weights' resident pages
as they go (engine/mapped_pages.py): the packed copies are what stays.

Thread safety: compiled models are shared and immutable; each runner owns its infer request(s), used under the
runner's lock (the dispatcher already serializes model calls; the lock covers any other caller).
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.engine.mapped_pages import PageDropper, weight_files
from cyclediff.export.specs import ModelSpec

DTYPES = {"fp32": "f32", "bf16": "bf16"}  # cyclediff dtype -> INFERENCE_PRECISION_HINT


def require(device: torch.device, dtype: str) -> None:
    """Refuse, with the fix, what this backend cannot run well here."""
    if device.type != "cpu":
        raise BackendError(f"backend 'openvino' runs on the CPU, not {device}; use device='cpu', or backend "
                           "'tensorrt' / 'torch' on a GPU")
    if dtype not in DTYPES:
        raise BackendError(f"backend 'openvino' runs dtype 'fp32' or 'bf16', not {dtype!r}; fp16 is for CUDA "
                           "backends")
    try:
        import openvino  # noqa: F401
    except ImportError as err:
        raise BackendError("backend 'openvino' needs the openvino package (pip install openvino)") from err
    if dtype == "bf16" and not cpu_has_bf16():
        raise BackendError("dtype='bf16' needs a CPU with bf16 instructions (AVX512_BF16 or AMX: Zen 4, Sapphire "
                           "Rapids and later); OpenVINO would emulate it slowly on this one. Use dtype='fp32'")


def cpu_has_bf16() -> bool:
    """The CPU plugin lists BF16 only where the CPU computes it natively (AVX512_BF16, AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_config(dtype: str, threads: int) -> dict[str, str]:
    """One stream of `threads` threads for latency: our graphs run one call at a time.

    CPU_RUNTIME_CACHE_CAPACITY 0: the plugin's cache of shape-specialized primitives returned wrong results
    (max |diff| 0.6 against ONNX Runtime) for a tiny UNet's 8x8 call made after a 2x2 one (OpenVINO 2026.4;
    tests/test_openvino.py keeps the case). Without it the SD UNet step took the same time (2.2-2.7 s fp32)."""
    return {"INFERENCE_PRECISION_HINT": DTYPES[dtype], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads), "CPU_RUNTIME_CACHE_CAPACITY": "0"}


class OvModel(ModelRunner):
    """Runs one compiled model into the caller's preallocated outputs (zero-copy in and out)."""

    def __init__(self, path: Path, spec: ModelSpec, dtype: str, threads: int):
        super().__init__(spec)
        import openvino as ov

        self.path, self.dtype, self._weights = path, dtype, weight_files(path)
        core = ov.Core()
        self._lock = threading.Lock()
        self._packed = False  # the plugin packs the weights on the first call (under _lock)
        with PageDropper(self._weights):
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", compile_config(dtype, threads))
        self._request = self.compiled.create_infer_request()

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        check_outputs(self.spec, outputs)
        alive = [feeds[t.name].contiguous() for t in self.spec.inputs]  # must outlive the run
        with self._lock:
            for t, tensor in zip(self.spec.inputs, alive):
                self._request.set_tensor(t.name, shared(tensor))
            for t in self.spec.outputs:
                self._request.set_tensor(t.name, shared(outputs[t.name]))
            if self._packed:
                self._request.infer()
                return
            with PageDropper(self._weights):
                self._request.infer()
            self._packed = True


def check_outputs(spec: ModelSpec, outputs: Mapping[str, torch.Tensor]) -> None:
    for t in spec.outputs:
        if not outputs[t.name].is_contiguous() or outputs[t.name].device.type != "cpu":
            raise ValueError(f"{spec.name}.{t.name}: output buffer must be a contiguous CPU tensor")


def shared(tensor: torch.Tensor):
    """An OpenVINO tensor over the torch tensor's memory (no copy)."""
    import openvino as ov

    return ov.Tensor(tensor.numpy(), shared_memory=True)
