"""OpenVINO backend: the exported graphs on OpenVINO's CPU plugin, fp32 (exact) or bf16 (the fast CPU mode).

One compiled model per exported graph, with the export's dynamic batch and spatial axes: the CPU plugin packs the
weights once and every shape reuses them. A static reshape per workload shape was 4 % faster on the SD UNet here
(1.13 s against 1.18 s per guided 256² step, bf16) but costs a compile (2.5-4 s) and a second packed copy of the
weights (1.7 GB bf16) per shape, so the graph stays dynamic.

Memory: the IR's weights are memory-mapped; compiling reads all of them and the first call packs them into the
plugin's own buffers (bf16: half the bytes), after which the mapping is never read again, yet it stays resident:
RssFile 3.3 GB for the SD UNet on top of its 1.7 GB of packed bf16 weights. So the compile and a model's first
call run while a thread drops the mapping's resident pages every 0.1 s (madvise MADV_DONTNEED on the read-only
file mapping: a page read again faults back in from the file, unchanged; the page cache keeps it, outside the
process's RSS). The packing stays on the first call (3.7 s for the SD UNet in bf16 here) rather than in a
warm-up at load: the load then takes compile time only (2.5 s for the SD UNet), and the first edit pays the
packing once, as it would pay a warm-up.

Thread safety: the compiled model is shared and immutable; each runner owns one infer request, used under the
runner's lock (the dispatcher already serializes model calls; the lock covers any other caller).
"""
from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.export.models import ModelSpec

DTYPES = {"fp32": "f32", "bf16": "bf16"}  # cyclediff dtype -> INFERENCE_PRECISION_HINT
_MADV_DONTNEED = 4


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

        self.path, self.dtype, self._weights = path, dtype, _weight_files(path)
        core = ov.Core()
        self._lock = threading.Lock()
        self._packed = False  # the plugin packs the weights on the first call (under _lock)
        with PageDropper(self._weights):
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", compile_config(dtype, threads))
        self._request = self.compiled.create_infer_request()

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        for t in self.spec.outputs:
            if not outputs[t.name].is_contiguous() or outputs[t.name].device.type != "cpu":
                raise ValueError(f"{self.spec.name}.{t.name}: output buffer must be a contiguous CPU tensor")
        alive = [feeds[t.name].contiguous() for t in self.spec.inputs]  # must outlive the run
        with self._lock:
            for t, tensor in zip(self.spec.inputs, alive):
                self._request.set_tensor(t.name, _shared(tensor))
            for t in self.spec.outputs:
                self._request.set_tensor(t.name, _shared(outputs[t.name]))
            if self._packed:
                self._request.infer()
                return
            with PageDropper(self._weights):
                self._request.infer()
            self._packed = True


def _shared(tensor: torch.Tensor):
    """An OpenVINO tensor over the torch tensor's memory (no copy)."""
    import openvino as ov

    return ov.Tensor(tensor.numpy(), shared_memory=True)


def _weight_files(xml_or_onnx: Path) -> list[Path]:
    """The files a graph's weights are mapped from: the IR's .bin, or an ONNX graph's external data."""
    if xml_or_onnx.suffix == ".xml":
        return [xml_or_onnx.with_suffix(".bin")]
    return [p for p in xml_or_onnx.parent.glob(xml_or_onnx.name + "*.data")] + [xml_or_onnx]


class PageDropper:
    """While the block runs (and once at its end), drop the resident pages of `files`' read-only mappings every
    `period` seconds, so that the process never holds a whole mapped weight file at once."""

    def __init__(self, files: Iterable[Path], period: float = 0.1):
        self.files, self.period = list(files), period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cyclediff-page-dropper", daemon=True)

    def __enter__(self) -> PageDropper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        drop_file_pages(self.files)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            drop_file_pages(self.files)


def drop_file_pages(files: Iterable[Path]) -> int:
    """Drop this process's resident pages of read-only mappings of `files`; returns the bytes of the ranges.

    Only mappings without write permission are touched: their pages are the file's, and the kernel reads them
    back from it on the next access. Linux only; elsewhere nothing is done."""
    if not sys.platform.startswith("linux"):
        return 0
    names = {str(Path(f).resolve()) for f in files}
    ranges = [r for r in _mappings() if r[2] in names and "w" not in r[3]]
    if not ranges:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return sum(end - start for start, end, _, _ in ranges if libc.madvise(start, end - start, _MADV_DONTNEED) == 0)


def _mappings() -> list[tuple[int, int, str, str]]:
    """(start, end, path, permissions) of every file mapping in /proc/self/maps."""
    out = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    start, end = (int(v, 16) for v in parts[0].split("-"))
                    out.append((start, end, parts[5].rstrip("\n"), parts[1]))
    except OSError:
        return []
    return out
