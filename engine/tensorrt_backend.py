"""TensorRT backend: static-shape plans bound by tensor name to the runtime's own CUDA tensors.

`load_plans` checks each plan against the manifest (TensorRT version, GPU, sha256) before deserializing;
`TrtModel` enqueues with execute_async_v3 on torch's current stream, so a CUDA graph captures it. All
engines run one after another on that stream, so their contexts share one activation workspace.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import torch

from cyclediff.engine.base import BackendError, ModelRunner
from cyclediff.export.manifest import Manifest, ManifestError
from cyclediff.export.models import MODEL_NAMES, VAE_DECODER, VAE_ENCODER, ModelSpec
from cyclediff.export.plan_cache import (
    PlanEntry, check_compatible, check_plan_bytes, read_plans, rebuild_command, require_tensorrt,
)

if TYPE_CHECKING:
    import tensorrt as trt


class Workspace:
    """One device buffer for the activations of every engine; sized by the largest (they never overlap)."""

    def __init__(self, engines: Sequence["trt.ICudaEngine"], device: torch.device):
        self.nbytes = max((int(e.device_memory_size_v2) for e in engines), default=0)
        self.buffer = torch.empty(max(self.nbytes, 1), dtype=torch.uint8, device=device)  # 256-byte aligned

    def attach(self, context: "trt.IExecutionContext") -> None:
        context.set_device_memory(self.buffer.data_ptr(), self.nbytes)


class TrtPlan:
    """One deserialized engine (one static shape set) and its execution context."""

    def __init__(self, engine: "trt.ICudaEngine", workspace: Workspace | None):
        import tensorrt as trt

        self.engine = engine
        if workspace is None:
            self.context = engine.create_execution_context()
        else:
            self.context = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            workspace.attach(self.context)
        # name -> (static shape, torch dtype, is input)
        self.io: dict[str, tuple[tuple[int, ...], torch.dtype, bool]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dims = engine.get_tensor_shape(name)
            shape = tuple(int(dims[k]) for k in range(len(dims)))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self.io[name] = (shape, torch_dtype(engine.get_tensor_dtype(name)), is_input)
            if is_input:
                self.context.set_input_shape(name, trt.Dims(list(shape)))
        self.batch = next(s[0] for s, _, inp in self.io.values() if inp)

    def run(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Bind every I/O tensor by name (checked against the engine) and enqueue on torch's current stream."""
        for name, (shape, dtype, _) in self.io.items():
            t = tensors[name]
            check_binding(name, tuple(t.shape), t.dtype, t.is_contiguous() and t.is_cuda, shape, dtype)
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream(tensors[next(iter(self.io))].device).cuda_stream
        if not self.context.execute_async_v3(stream):
            raise BackendError(f"TensorRT enqueue failed for engine with I/O {sorted(self.io)}")


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
    """A model's plans, one per static batch; a smaller batch runs padded in the next larger plan."""

    def __init__(self, spec: ModelSpec, plans: Sequence[TrtPlan], device: torch.device):
        super().__init__(spec)
        self.plans = sorted(plans, key=lambda p: p.batch)
        self.device = device
        self._staging: dict[int, dict[str, torch.Tensor]] = {}  # plan batch -> padded I/O buffers

    def __call__(self, feeds: Mapping[str, torch.Tensor], outputs: Mapping[str, torch.Tensor]) -> None:
        self.check(feeds)
        batch = feeds[self.spec.inputs[0].name].shape[0]
        plan = pick_plan([p.batch for p in self.plans], batch, self.spec.name)
        chosen = self.plans[plan]
        if chosen.batch == batch:  # zero-copy: the engine reads and writes the caller's tensors
            chosen.run({**feeds, **outputs})
            return
        staging = self._staged(chosen)
        for name, t in feeds.items():
            staging[name][:batch].copy_(t)
        chosen.run(staging)
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
    engines: dict[tuple[str, str], list["trt.ICudaEngine"]] = {}
    with torch.cuda.device(device):
        for name in MODEL_NAMES:
            if not entries.get(name):
                raise ManifestError(f"{folder} has no TensorRT plan for {name}; build them with: {hint}")
            for entry in entries[name]:
                check_compatible(entry, target, hint)
                engines.setdefault((name, entry.precision), []).append(_deserialize(runtime, folder, entry, hint))
        workspace = Workspace([e for es in engines.values() for e in es], device)
        models = {key: TrtModel(manifest.models[key[0]].spec, [TrtPlan(e, workspace) for e in es], device)
                  for key, es in engines.items()}
    return _with_fallbacks(models)


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
    from cyclediff.runtime.precision import DECODE_GUARD, ENCODE_GUARD, GuardedRunner

    missing = [name for name in MODEL_NAMES if (name, "fp16") not in models]
    if missing:
        raise ManifestError(f"no fp16 TensorRT plan for {', '.join(missing)}; rebuild: `cyclediff-export ... --trt`")
    runners: dict[str, ModelRunner] = {name: models[(name, "fp16")] for name in MODEL_NAMES}
    for name, guard in ((VAE_DECODER, DECODE_GUARD), (VAE_ENCODER, ENCODE_GUARD)):
        if (name, "fp32") in models:
            runners[name] = GuardedRunner(models[(name, "fp16")], models[(name, "fp32")], guard)
    return runners
