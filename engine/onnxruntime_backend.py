"""ONNX Runtime backend: runs the exported .onnx files with I/O bound straight to the runtime's tensors."""
from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.export.specs import ModelSpec

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


def session_options(optimized: bool, threads: int | None, cpu: bool = True):
    """optimized: the graph was saved by ONNX Runtime at ORT_ENABLE_ALL (export/ort_cache.py), so loading it
    skips optimization. threads: intra-op threads of this session (None: ONNX Runtime's own default).
    cpu: the session runs on the CPU provider (its activations then come from the process's shared arena)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_DISABLE_ALL if optimized else level.ORT_ENABLE_ALL
    if cpu:
        # One CPU arena for every session of the process, not one each: a session's own arena keeps its largest
        # run's activations for the session's life, so the UNet's held the encoder chunk's peak while the VAE
        # decoder's added ~1 GB on top (SD v1.4, 512²). Shared, the phases reuse the same blocks.
        _register_shared_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
        # Not session.prepack.enable_parallel: it packs the SD UNet in 0.6 s instead of 1.0 s, but the 512² edit
        # then peaked at 23.0 GB RSS instead of 5.6 GB (ONNX Runtime 1.32, CPU; benchmarks/README.md).
    if threads is not None:
        # Our graphs run sequentially, so one inter-op thread; idle workers sleep instead of spinning, so that the
        # four sessions (and other Engines or processes) do not take cores from the one that is running.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


_ARENA_LOCK = threading.Lock()
_arena_registered = False


def _register_shared_cpu_arena() -> None:
    """Register, once per process, the CPU arena that sessions with session.use_env_allocators share.

    Extended by what each allocation asks (strategy 1, kSameAsRequested), not in doublings, so it holds the
    largest phase's activations and little more."""
    global _arena_registered
    import onnxruntime as ort

    with _ARENA_LOCK:
        if _arena_registered:
            return
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        config = ort.OrtArenaCfg({"arena_extend_strategy": 1})
        ort.create_and_register_allocator(info, config)
        _arena_registered = True


class OrtModel(ModelRunner):
    def __init__(self, path: Path, spec: ModelSpec, device: torch.device, optimized: bool = False,
                 threads: int | None = None):
        super().__init__(spec)
        import onnxruntime as ort

        options = session_options(optimized, threads, cpu=device.type == "cpu")
        self.session = ort.InferenceSession(str(path), options, providers=providers(device))
        self.device, self.path, self.optimized = device, path, optimized

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
