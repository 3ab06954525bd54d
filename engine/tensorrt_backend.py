"""TensorRT backend: static-shape plans bound by tensor name to the runtime's own CUDA tensors.

`load_plans` checks each plan against the manifest (TensorRT version, GPU, sha256) before deserializing.
Input shapes come from the plan record (the build's min = opt = max profile): `engine.get_tensor_shape` keeps
-1 for the ONNX graphs' symbolic axes. Output shapes are read from a context once its inputs are set.

Streams: eager calls run on the backend's own stream (TensorRT syncs internally on the legacy default stream);
calls inside a CUDA-graph capture run on the capturing stream, so the graph records them. All engines run one
after another, so their contexts share one activation workspace, which every plan keeps alive.

Contexts: TensorRT forbids one execution context to serve graphs with different bound addresses, and wants one
uncaptured enqueue before a capture. So each plan keeps one context per set of bound addresses: the warm-up
calls of a CapturedStep (same static buffers as its capture) create and warm it, the capture pins it.
"""
from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.export.manifest import Manifest, ManifestError
from cyclediff.export.plan_cache import (
    PlanEntry,
    check_compatible,
    check_plan_bytes,
    read_plans,
    rebuild_command,
    require_tensorrt,
)
from cyclediff.export.specs import MODEL_NAMES, VAE_DECODER, VAE_ENCODER, ModelSpec

if TYPE_CHECKING:
    import tensorrt as trt

Addresses = tuple[tuple[str, int], ...]  # (tensor name, data_ptr) for every I/O tensor, sorted
UNPINNED_CONTEXTS = 8  # eager address sets kept warm per plan; contexts a graph captured are kept forever


def _capturing() -> bool:
    return torch.cuda.is_current_stream_capturing()


class Workspace:
    """One device buffer for the activations of every engine; sized by the largest (they never overlap)."""

    def __init__(self, engines: Sequence["trt.ICudaEngine"], device: torch.device):
        self.nbytes = max((int(e.device_memory_size_v2) for e in engines), default=0)
        self.buffer = torch.empty(max(self.nbytes, 1), dtype=torch.uint8, device=device)  # 256-byte aligned

    def attach(self, context: "trt.IExecutionContext") -> None:
        context.set_device_memory(self.buffer.data_ptr(), self.nbytes)


class TrtPlan:
    """One deserialized engine (one static shape set) and its execution contexts.

    shapes: input name -> static shape, from the plan record. `workspace` is held here: the contexts (and any
    graph captured through them) write to its address for as long as the plan lives."""

    def __init__(self, engine: "trt.ICudaEngine", shapes: Mapping[str, tuple[int, ...]], workspace: Workspace | None,
                 label: str = "plan"):
        self.engine, self.workspace, self.label = engine, workspace, label
        self.inputs = {k: tuple(int(x) for x in v) for k, v in shapes.items()}
        probe = self._new_context()  # inputs set: the context now knows the output shapes
        # name -> (static shape, torch dtype, is input)
        self.io = _io_table(engine, probe, self.inputs, label)
        self.batch = next(iter(self.inputs.values()))[0]
        self._contexts: collections.OrderedDict[Addresses, "trt.IExecutionContext"] = collections.OrderedDict()
        self._pinned: set[Addresses] = set()

    def _new_context(self) -> "trt.IExecutionContext":
        import tensorrt as trt

        if self.workspace is None:
            context = self.engine.create_execution_context()
        else:
            context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            self.workspace.attach(context)
        if context is None:
            raise BackendError(f"TensorRT could not create an execution context for {self.label}")
        for name, shape in self.inputs.items():
            if not context.set_input_shape(name, trt.Dims(list(shape))):
                raise BackendError(f"TensorRT refused input shape {list(shape)} for {name!r} of {self.label} (outside "
                                   "the plan's optimization profile); the plan record and the plan disagree: rebuild "
                                   "with `cyclediff-export ... --trt`")
        return context

    def context_for(self, addresses: Addresses, capturing: bool) -> "trt.IExecutionContext":
        """The context bound to exactly these addresses (made on first use; kept while a graph may use it)."""
        context = self._contexts.get(addresses)
        if context is None:
            if capturing:  # TensorRT's first enqueue may allocate or sync, which a capture cannot hold
                raise BackendError(f"{self.label}: a CUDA graph captures an address set never run eagerly; warm "
                                   "the step up (CaptureConfig.warmup_calls >= 1) before capturing")
            context = self._contexts[addresses] = self._new_context()
            for name, ptr in addresses:
                context.set_tensor_address(name, ptr)
        self._contexts.move_to_end(addresses)
        if capturing:
            self._pinned.add(addresses)
        else:  # never inside a capture: evicting waits for the device
            self._evict()
        return context

    def _evict(self) -> None:
        unpinned = [a for a in self._contexts if a not in self._pinned]
        stale = unpinned[: max(0, len(unpinned) - UNPINNED_CONTEXTS)]  # oldest first
        if stale and torch.cuda.is_available():
            torch.cuda.synchronize()  # no enqueued work may still use a context when it is destroyed
        for addresses in stale:
            del self._contexts[addresses]

    def run(self, tensors: Mapping[str, torch.Tensor], stream: "torch.cuda.Stream | None" = None) -> None:
        """Bind every I/O tensor by name (checked against the engine) and enqueue: on the capturing stream
        inside a capture, else on `stream` (ordered after and before the caller's current stream)."""
        for name, (shape, dtype, _) in self.io.items():
            t = tensors[name]
            check_binding(name, tuple(t.shape), t.dtype, t.is_contiguous() and t.is_cuda, shape, dtype)
        addresses = tuple(sorted((name, tensors[name].data_ptr()) for name in self.io))
        capturing = _capturing()
        context = self.context_for(addresses, capturing)
        current = torch.cuda.current_stream(tensors[next(iter(self.io))].device)
        if capturing or stream is None:
            self._enqueue(context, current)
            return
        stream.wait_stream(current)
        self._enqueue(context, stream)
        current.wait_stream(stream)

    def _enqueue(self, context: "trt.IExecutionContext", stream: "torch.cuda.Stream") -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            raise BackendError(f"TensorRT enqueue failed for {self.label} with I/O {sorted(self.io)}")


def _io_table(engine: "trt.ICudaEngine", context: "trt.IExecutionContext", inputs: Mapping[str, tuple[int, ...]],
              label: str) -> dict[str, tuple[tuple[int, ...], torch.dtype, bool]]:
    """name -> (shape, dtype, is_input): inputs from the record, outputs from the context (inputs already set)."""
    import tensorrt as trt

    io: dict[str, tuple[tuple[int, ...], torch.dtype, bool]] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        if is_input and name not in inputs:
            raise BackendError(f"{label} has input {name!r}, which its plan record does not give a shape for; rebuild")
        shape = inputs[name] if is_input else _dims(context.get_tensor_shape(name))
        if min(shape, default=0) < 0:
            raise BackendError(f"{label}: TensorRT gives output {name!r} the unresolved shape {list(shape)}")
        io[name] = (shape, torch_dtype(engine.get_tensor_dtype(name)), is_input)
    missing = set(inputs) - {n for n, (_, _, inp) in io.items() if inp}
    if missing:
        raise BackendError(f"{label}: the plan record names inputs {sorted(missing)} that the engine lacks; rebuild")
    return io


def _dims(dims: "trt.Dims") -> tuple[int, ...]:
    return tuple(int(dims[k]) for k in range(len(dims)))


def torch_dtype(dtype: "trt.DataType") -> torch.dtype:
    import tensorrt as trt

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.BF16: torch.bfloat16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64, trt.DataType.INT8: torch.int8,
             trt.DataType.UINT8: torch.uint8, trt.DataType.BOOL: torch.bool}
    if dtype not in table:
        raise BackendError(f"TensorRT I/O type {dtype} has no torch equivalent here")
    return table[dtype]


def check_binding(name: str, shape: tuple[int, ...], dtype: torch.dtype, dense_cuda: bool,
                  want_shape: tuple[int, ...], want_dtype: torch.dtype) -> None:
    """TensorRT reads raw addresses: anything but the exact static shape/dtype, contiguous on CUDA, is refused."""
    if shape != want_shape or dtype != want_dtype or not dense_cuda:
        raise ValueError(f"TensorRT tensor {name!r}: got {list(shape)} {dtype} (contiguous CUDA: {dense_cuda}); "
                         f"the plan is static: {list(want_shape)} {want_dtype}, a contiguous CUDA tensor")


class TrtModel(ModelRunner):
    """A model's plans, one per static batch; a smaller batch runs padded in the next larger plan.

    `static_batches`: the batches the plans serve exactly (zero-copy); other sizes are padded here."""

    def __init__(self, spec: ModelSpec, plans: Sequence[TrtPlan], device: torch.device,
                 stream: "torch.cuda.Stream | None" = None):
        super().__init__(spec)
        self.plans = sorted(plans, key=lambda p: p.batch)
        self.static_batches = tuple(p.batch for p in self.plans)
        self.device, self.stream = device, stream
        self._staging: dict[int, dict[str, torch.Tensor]] = {}  # plan batch -> padded I/O buffers

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        batch = feeds[self.spec.inputs[0].name].shape[0]
        chosen = self.plans[pick_plan(self.static_batches, batch, self.spec.name)]
        if chosen.batch == batch:  # zero-copy: the engine reads and writes the caller's tensors
            chosen.run({**feeds, **outputs}, self.stream)
            return
        staging = self._staged(chosen)
        for name, t in feeds.items():
            staging[name][:batch].copy_(t)
        chosen.run(staging, self.stream)
        for name, t in outputs.items():
            t.copy_(staging[name][:batch])

    def _staged(self, plan: TrtPlan) -> dict[str, torch.Tensor]:
        if plan.batch not in self._staging:  # zeros: padding rows stay finite
            self._staging[plan.batch] = {n: torch.zeros(s, dtype=d, device=self.device)
                                         for n, (s, d, _) in plan.io.items()}
        return self._staging[plan.batch]


def pick_plan(batches: Sequence[int], batch: int, model: str) -> int:
    """Index of the exact batch, else of the smallest larger one (sorted `batches`), else a clear error."""
    for i, b in enumerate(batches):
        if b >= batch:
            return i
    raise ValueError(f"{model}: batch {batch} is larger than every TensorRT plan ({list(batches)}); rebuild the "
                     "plans for this batch (`cyclediff-export ... --trt` with a larger --batch / --max-batch)")


def load_plans(folder: Path, manifest: Manifest, device: torch.device) -> dict[str, ModelRunner]:
    """The four models' runners from manifest.extra['tensorrt'], refused with a rebuild hint where stale."""
    if device.type != "cuda":
        raise BackendError(f"backend 'tensorrt' runs on a CUDA device, not {device}; use device='cuda' or another "
                           "backend ('onnxruntime', 'torch')")
    target = require_tensorrt(need_builder=False, device_index=device.index or 0)  # first: its message is clear
    import tensorrt as trt

    hint = rebuild_command(manifest, folder)
    entries = read_plans(manifest)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engines: dict[tuple[str, str], list[tuple["trt.ICudaEngine", PlanEntry]]] = {}
    with torch.cuda.device(device):
        for name in MODEL_NAMES:
            if not entries.get(name):
                raise ManifestError(f"{folder} has no TensorRT plan for {name}; build them with: {hint}")
            for entry in entries[name]:
                check_compatible(entry, target, hint)
                engines.setdefault((name, entry.precision), []).append((_deserialize(runtime, folder, entry, hint),
                                                                        entry))
        return _with_fallbacks(build_models(engines, manifest, device, torch.cuda.Stream(device)))


def build_models(engines: Mapping[tuple[str, str], Sequence[tuple["trt.ICudaEngine", PlanEntry]]],
                 manifest: Manifest, device: torch.device, stream: "torch.cuda.Stream | None",
                 make_workspace: Callable[..., Workspace] = Workspace) -> dict[tuple[str, str], TrtModel]:
    """(model, precision) -> TrtModel; every plan shares one workspace and holds a reference to it."""
    workspace = make_workspace([e for es in engines.values() for e, _ in es], device)
    return {key: TrtModel(manifest.models[key[0]].spec,
                          [TrtPlan(e, entry.shapes, workspace, entry.file) for e, entry in es], device, stream)
            for key, es in engines.items()}


def _deserialize(runtime: "trt.Runtime", folder: Path, entry: PlanEntry, hint: str) -> "trt.ICudaEngine":
    path = folder / entry.file
    if not path.is_file():
        raise ManifestError(f"TensorRT plan {path} is missing; rebuild: {hint}")
    data = path.read_bytes()
    check_plan_bytes(entry, data, hint)  # before the deserializer sees a partial file
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise BackendError(f"TensorRT could not deserialize {path} (see its log above); rebuild: {hint}")
    return engine


def _with_fallbacks(models: dict[tuple[str, str], TrtModel]) -> dict[str, ModelRunner]:
    """fp16 runners; VAEs with an fp32 plan are guarded (re-run in fp32 where fp16 overflows)."""
    from cyclediff.runtime.core.precision import DECODE_GUARD, ENCODE_GUARD, GuardedRunner

    missing = [name for name in MODEL_NAMES if (name, "fp16") not in models]
    if missing:
        raise ManifestError(f"no fp16 TensorRT plan for {', '.join(missing)}; rebuild: `cyclediff-export ... --trt`")
    runners: dict[str, ModelRunner] = {name: models[(name, "fp16")] for name in MODEL_NAMES}
    for name, guard in ((VAE_DECODER, DECODE_GUARD), (VAE_ENCODER, ENCODE_GUARD)):
        if (name, "fp32") in models:
            runners[name] = GuardedRunner(models[(name, "fp16")], models[(name, "fp32")], guard)
    return runners
