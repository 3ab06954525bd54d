"""CUDA graphs as a three-state machine, WARMUP -> CAPTURE -> REPLAY, checked on replay (tinygrad's JIT shape).

`CapturedStep(fn, device)` runs `fn(**static_inputs)` eagerly for the warm-up calls, then records it into a
graph once, then replays the graph. Per call, the caller's inputs are copied into static input buffers
(allocated at the first call); a step serves one input signature: a call whose names, shapes, dtypes or devices
differ from the first call's raises GraphSignatureError (callers keep one CapturedStep per signature).

What replay returns are the *static output buffers* of the capture: the next replay overwrites them, so a
caller that keeps a result must copy it out first. `fn` may also read and write other tensors of fixed address
(a latent state, a device step counter): the graph replays on exactly those tensors.

A capture that fails (an op that cannot be captured, a library that syncs) is not retried: that step runs
eagerly from then on (phase EAGER), and the process logs one warning for all such steps (`FAILURES` counts them).

The capture runs in a thread that has warmed the step up (cuBLAS and cuDNN keep per-thread, per-stream state that
a first call creates; creating it inside a capture fails): a capture in another thread than the last warm-up runs
one more warm-up first. `call(inputs, may_capture=False)` runs a due capture eagerly instead (as a warm-up) and
captures on a later call: the dispatcher asks for that while other calls may be doing CUDA work.

The device is injected: `CudaGraphDevice` for torch.cuda.CUDAGraph, `NullGraphDevice` (no CUDA: capture records,
replay re-runs eagerly) so the state machine is tested on CPU; `CudaGraphDevice(cuda=)` takes a stand-in for the
torch.cuda module, so its stream handling is tested on CPU too.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch

Signature = tuple[tuple[str, tuple[int, ...], torch.dtype, torch.device], ...]
log = logging.getLogger(__name__)


class Phase(enum.Enum):
    WARMUP = "warmup"
    CAPTURE = "capture"
    REPLAY = "replay"
    EAGER = "eager"  # the capture failed: run fn directly, never capture again


class CaptureFailures:
    """Counts failed captures (each such step then runs eagerly); warns on the first only."""

    def __init__(self) -> None:
        self.count = 0

    def note(self, err: Exception) -> None:
        if self.count == 0:
            log.warning("CUDA graph capture failed (%s: %s); those steps run eagerly from now on (warned once)",
                        type(err).__name__, err)
        self.count += 1


FAILURES = CaptureFailures()


class GraphSignatureError(ValueError):
    """Inputs whose names, shapes, dtypes or devices differ from the captured ones."""


class GraphDevice(Protocol):
    def warmup(self, fn: Callable[[], Any]) -> Any:
        """Run fn now, eagerly; return its outputs."""

    def capture(self, fn: Callable[[], Any]) -> Any:
        """Record fn without running its work (as CUDA capture does); return a handle for replay."""

    def replay(self, graph: Any) -> Any:
        """Run the recorded work; return the static outputs."""


@dataclasses.dataclass(frozen=True)
class CaptureConfig:
    warmup_calls: int = 2  # eager calls before capture: lazy inits, cuBLAS/cuDNN/TensorRT first-run work

    def __post_init__(self) -> None:
        if self.warmup_calls < 0:
            raise ValueError(f"warmup_calls must be >= 0, got {self.warmup_calls}")


class CapturedStep:
    def __init__(self, fn: Callable[..., Any], device: GraphDevice, config: CaptureConfig = CaptureConfig()):
        self.fn, self.device, self.config = fn, device, config
        self.phase = Phase.WARMUP
        self.signature: Signature | None = None
        self.static_inputs: dict[str, torch.Tensor] = {}
        self.captures = 0  # graphs recorded: 1 once captured (a step is never re-captured)
        self.failed = False  # the capture failed: eager for good
        self._warmups = 0
        self._warm_thread: int | None = None  # the thread of the last warm-up
        self._graph: Any = None

    def __call__(self, **inputs: torch.Tensor) -> Any:
        return self.call(inputs)

    def call(self, inputs: dict[str, torch.Tensor], may_capture: bool = True) -> Any:
        """Copy inputs into the static buffers and run; may_capture=False: a due capture waits (runs eagerly)."""
        sig = signature(inputs)
        if self.signature is None:
            self._start(sig, inputs)
        elif sig != self.signature:
            raise GraphSignatureError(
                f"captured step called with {describe(sig)}, but it was set up for {describe(self.signature)} "
                f"(phase {self.phase.value}); make one CapturedStep per input signature"
            )
        for name, value in inputs.items():
            static = self.static_inputs[name]
            if value.data_ptr() != static.data_ptr():  # a caller may write the static buffer directly
                static.copy_(value)
        return self._run(may_capture)

    @property
    def capture_due(self) -> bool:
        """The next call would capture (when allowed to)."""
        return self.phase is Phase.WARMUP and self._warmups >= self.config.warmup_calls

    def _run(self, may_capture: bool) -> Any:
        run = self._bound
        if self.phase is Phase.EAGER:
            return run()
        if self.phase is Phase.REPLAY:
            return self.device.replay(self._graph)
        if not self.capture_due or not may_capture:
            return self._warmup()
        if self._warmups and self._warm_thread != threading.get_ident():
            self._warmup()  # this thread's own warm-up; the replay below overwrites its result
        self.phase = Phase.CAPTURE
        try:
            self._graph = self.device.capture(run)
        except Exception as err:  # noqa: BLE001 - any capture failure: fall back, do not retry
            self.phase, self._graph, self.failed = Phase.EAGER, None, True
            FAILURES.note(err)
            return run()  # capture computed nothing: this call's result comes from an eager run
        self.captures += 1
        self.phase = Phase.REPLAY
        return self.device.replay(self._graph)  # right after capture too: capture itself computed nothing

    def _warmup(self) -> Any:
        self._warmups += 1
        self._warm_thread = threading.get_ident()
        return self.device.warmup(self._bound)

    def _bound(self) -> Any:
        return self.fn(**self.static_inputs)

    def _start(self, sig: Signature, inputs: dict[str, torch.Tensor]) -> None:
        self.signature = sig
        self.static_inputs = {k: torch.empty(v.shape, dtype=v.dtype, device=v.device) for k, v in inputs.items()}


def signature(inputs: dict[str, torch.Tensor]) -> Signature:
    return tuple(sorted((k, tuple(v.shape), v.dtype, v.device) for k, v in inputs.items()))


def describe(sig: Signature) -> str:
    return ", ".join(f"{k}{list(s)} {str(d).removeprefix('torch.')} on {dev}" for k, s, d, dev in sig) or "no inputs"


class CudaGraphDevice:
    """torch.cuda.CUDAGraph, warmed up and captured on one side stream of its own.

    - One stream for both: the capture then finds the per-stream state (cuBLAS workspaces) that the warm-up made.
    - capture_error_mode="thread_local": only this thread's capture-unsafe calls fail it (the dispatcher also
      captures only while no other call is in flight; see dispatcher.py).
    - The caller's stream waits for the side stream's work, and after a capture, failed or not, it is the
      thread's current stream again: torch's `graph.__exit__` ends the capture before it restores the stream,
      so a capture_end that raises would leave the thread on the capture stream, its eager fallback unsynced
      with the caller and the next capture recording foreign kernels.
    - Replay runs on the caller's current stream, so its outputs are ordered before the caller reads them.
    cuda: the torch.cuda module, or a stand-in with the same names (tests)."""

    def __init__(self, device: torch.device | None = None, pool: Any = None, cuda: Any = None):
        self.cuda = cuda if cuda is not None else torch.cuda
        self.stream = self.cuda.Stream(device)
        self.pool = pool  # torch.cuda.graph_pool_handle() to share memory between graphs that never overlap

    def warmup(self, fn: Callable[[], Any]) -> Any:
        current = self.cuda.current_stream()
        self.stream.wait_stream(current)
        try:
            with self.cuda.stream(self.stream):
                return fn()
        finally:
            current.wait_stream(self.stream)

    def capture(self, fn: Callable[[], Any]) -> Any:
        graph = self.cuda.CUDAGraph()
        current = self.cuda.current_stream()
        self.stream.wait_stream(current)  # the static inputs were written on the caller's stream
        try:
            with self.cuda.graph(graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"):
                out = fn()
        finally:
            self.cuda.set_stream(current)
        return graph, out

    def replay(self, graph: Any) -> Any:
        cuda_graph, out = graph
        cuda_graph.replay()
        return out


class NullGraphDevice:
    """No device: capture records fn, replay runs it eagerly. `events` lists every call, for tests."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def warmup(self, fn: Callable[[], Any]) -> Any:
        self.events.append("warmup")
        return fn()

    def capture(self, fn: Callable[[], Any]) -> Any:
        self.events.append("capture")
        return fn

    def replay(self, graph: Any) -> Any:
        self.events.append("replay")
        return graph()
