"""TensorRT plan logic without TensorRT (keys, shapes, manifest entries, refusals); a real build where it exists."""
from __future__ import annotations

import gc
import hashlib
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch

from cyclediff.engine import tensorrt_backend as tb
from cyclediff.engine.base import BackendError
from cyclediff.engine.tensorrt_backend import check_binding, load_plans, pick_plan
from cyclediff.export import plan_cache as pc
from cyclediff.export.manifest import Manifest, ManifestError, ModelEntry
from cyclediff.export.specs import MODEL_NAMES, TEXT_ENCODER, UNET, VAE_DECODER, VAE_ENCODER, Dims, specs
from cyclediff.export.tensorrt_build import BuildSettings, timing_cache_path

DIMS = Dims(text_len=77, text_width=768, text_states=13, latent_channels=4, vae_scale=8, unet_downscale=8)
SHAPES = {"sample": (2, 4, 64, 64), "timestep": (2,), "encoder_hidden_states": (2, 77, 768)}
CPU = torch.device("cpu")
KEY_ARGS = ("a" * 64, SHAPES, {"strongly_typed": True, "precision": "fp16"}, "10.13.0.35", "9.0")


def _manifest(extra=None) -> Manifest:
    sp = specs(DIMS)
    return Manifest(checkpoint={"spec": "sd-v1-5"}, scheduler={}, dims=DIMS, vae_scaling_factor=0.18215,
                    sample_size=512, models={n: ModelEntry(f"{n}.onnx", "0" * 64, sp[n]) for n in MODEL_NAMES},
                    tokenizer_files={}, tools={}, opset=18, extra=extra or {})


def _entry(**kw) -> pc.PlanEntry:
    base = dict(file="trt/unet-fp16-b2-abc.plan", sha256=hashlib.sha256(b"plan").hexdigest(), key="k" * 64,
                trt_version="10.13.0.35", compute_capability="9.0", shapes=dict(SHAPES))
    return pc.PlanEntry(**{**base, **kw})


def test_plan_key_is_stable_and_order_insensitive():
    same = pc.plan_key(KEY_ARGS[0], dict(reversed(list(SHAPES.items()))), *KEY_ARGS[2:])
    assert pc.plan_key(*KEY_ARGS) == same and len(same) == 64


@pytest.mark.parametrize("i, other", [
    (0, "b" * 64),
    (1, {**SHAPES, "sample": (2, 4, 64, 96)}),
    (2, {"strongly_typed": True, "precision": "fp32"}),
    (3, "10.13.0.36"),
    (4, "8.9"),
])
def test_plan_key_changes_with_each_input(i, other):
    args = list(KEY_ARGS)
    args[i] = other
    assert pc.plan_key(*args) != pc.plan_key(*KEY_ARGS)


def test_build_flags_reach_the_key():
    a, b = BuildSettings(), BuildSettings(optimization_level=5)
    assert a.flags("fp16") != b.flags("fp16") and a.flags("fp16") != a.flags("fp32")


def test_plan_entry_round_trips_through_the_manifest_json():
    plans = {UNET: (_entry(), _entry(file="trt/unet-fp16-b16.plan", shapes={**SHAPES, "timestep": (16,)})),
             VAE_DECODER: (_entry(file="trt/v.plan", precision="fp32", shapes={"latent": (1, 4, 64, 64)}),)}
    manifest = pc.with_plans(_manifest({"other": 1}), plans)
    again = Manifest.from_json(manifest.to_json())
    assert pc.read_plans(again) == plans
    assert again.extra["other"] == 1 and again.extra["tensorrt"]["schema"] == pc.SECTION_SCHEMA
    assert again.extra["tensorrt"]["plans"][UNET][0]["shapes"]["sample"] == [2, 4, 64, 64]


def test_manifest_without_plans_reads_empty_and_a_bad_schema_is_refused():
    assert pc.read_plans(_manifest()) == {}
    with pytest.raises(ManifestError, match="--trt"):
        pc.read_plans(_manifest({"tensorrt": {"schema": 99, "plans": {}}}))
    with pytest.raises(ManifestError, match="malformed"):
        pc.read_plans(_manifest({"tensorrt": {"schema": 1, "plans": {UNET: [{"file": "x"}]}}}))


@pytest.mark.parametrize("target", [pc.TrtTarget("10.14.1.2", "9.0"), pc.TrtTarget("10.13.0.35", "8.0")])
def test_plan_for_another_tensorrt_or_gpu_is_refused(target, tmp_path):
    hint = pc.rebuild_command(_manifest(), tmp_path)
    assert hint == f"cyclediff-export --ckpt sd-v1-5 --out {tmp_path} --trt"
    with pytest.raises(pc.PlanMismatch, match="Rebuild the plans here: cyclediff-export --ckpt sd-v1-5") as err:
        pc.check_compatible(_entry(), target, hint)
    assert target.trt_version in str(err.value) and target.compute_capability in str(err.value)
    pc.check_compatible(_entry(), pc.TrtTarget("10.13.0.35", "9.0"), hint)


def test_truncated_plan_is_refused_before_deserializing():
    pc.check_plan_bytes(_entry(), b"plan", "hint")
    with pytest.raises(pc.PlanMismatch, match="truncated or changed"):
        pc.check_plan_bytes(_entry(), b"pla", "hint")


def test_profiles_are_the_runtime_batches():
    p = pc.profiles(specs(DIMS), DIMS, pc.Workload(batch=2, height=512, width=768, guided=True, encoder_chunk=16))
    assert [s["sample"] for s in p[UNET]] == [(4, 4, 64, 96), (16, 4, 64, 96)]
    assert p[UNET][0]["encoder_hidden_states"] == (4, 77, 768) and p[UNET][1]["timestep"] == (16,)
    assert [s["input_ids"] for s in p[TEXT_ENCODER]] == [(1, 77), (2, 77)]
    assert p[VAE_ENCODER] == [{"image": (2, 3, 512, 768)}] and p[VAE_DECODER] == [{"latent": (2, 4, 64, 96)}]
    unguided = pc.profiles(specs(DIMS), DIMS, pc.Workload(batch=1, guided=False, encoder_chunk=1))
    assert [s["sample"][0] for s in unguided[UNET]] == [1]
    with pytest.raises(ValueError):
        pc.Workload(batch=0)


def test_plan_file_names_carry_the_key():
    assert pc.plan_file(UNET, SHAPES, "fp16", "0123456789abcdef" * 4) == "trt/unet-fp16-b2-0123456789ab.plan"


def test_timing_cache_is_per_tensorrt_and_gpu(tmp_path):
    path = timing_cache_path(BuildSettings(timing_cache_dir=tmp_path), pc.TrtTarget("10.13.0.35", "9.0"))
    assert path == tmp_path / "tensorrt" / "timing-trt10.13.0.35-sm90.cache"


def test_diagnose_names_every_missing_piece():
    msg = pc.diagnose(None, False, True, "No module named 'tensorrt'", "2.13.0+cpu", None)
    assert "pip install 'tensorrt>=10.12'" in msg and "No module named 'tensorrt'" in msg
    assert "a CUDA GPU visible to torch (torch 2.13.0+cpu, built for CUDA none)" in msg
    stub_only = types.ModuleType("tensorrt")  # what an installed tensorrt-stubs imports as
    assert "TensorRT Python package" in pc.diagnose(stub_only, True, True)
    lean = types.SimpleNamespace(Runtime=object, __version__="10.13.0.35")
    assert "builder" in pc.diagnose(lean, True, True) and pc.diagnose(lean, True, False) == ""
    old = types.SimpleNamespace(Runtime=object, Builder=object, __version__="8.6.1")
    assert ">= 10.1 (found 8.6.1)" in pc.diagnose(old, True, True)
    full = types.SimpleNamespace(Runtime=object, Builder=object, __version__="11.4.0.1")
    assert pc.diagnose(full, True, True) == ""


@pytest.mark.skipif(pc.diagnose(pc._import_tensorrt()[0], torch.cuda.is_available(), True) == "",
                    reason="TensorRT and a GPU are present: nothing is missing")
def test_require_tensorrt_says_what_is_missing_here():
    with pytest.raises(pc.TensorRTUnavailable, match="TensorRT engines need .*use backend 'onnxruntime'"):
        pc.require_tensorrt()
    with pytest.raises(pc.TensorRTUnavailable):  # before touching TensorRT or CUDA
        load_plans(Path("unused"), _manifest(), torch.device("cuda"))


def test_load_plans_refuses_cpu_with_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="CUDA device"):
        load_plans(tmp_path, _manifest(), torch.device("cpu"))


def test_pick_plan_prefers_exact_then_padded():
    assert pick_plan([2, 16], 2, UNET) == 0
    assert pick_plan([2, 16], 3, UNET) == 1
    assert pick_plan([2, 16], 1, UNET) == 0
    with pytest.raises(ValueError, match="larger than every TensorRT plan"):
        pick_plan([2, 16], 17, UNET)


def test_check_binding_refuses_wrong_shape_dtype_or_layout():
    check_binding("x", (2, 4), torch.float32, True, (2, 4), torch.float32)
    for args in [((2, 5), torch.float32, True), ((2, 4), torch.float16, True), ((2, 4), torch.float32, False)]:
        with pytest.raises(ValueError, match="static"):
            check_binding("x", *args, (2, 4), torch.float32)


def test_a_build_whose_plans_are_all_cached_converts_nothing(monkeypatch, tmp_path):
    from cyclediff.export import fp16, tensorrt_build

    converted, built = [], []
    monkeypatch.setattr(tensorrt_build, "require_tensorrt", lambda need_builder: pc.TrtTarget("10.13.0.35", "9.0"))
    monkeypatch.setattr(fp16, "convert_file", lambda src, dst, settings: converted.append(dst.name))

    def build_plan(onnx, shapes, out, settings, timing_cache):
        built.append(out.name)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(repr((onnx.name, sorted(shapes.items()))).encode())

    monkeypatch.setattr(tensorrt_build, "build_plan", build_plan)
    work = pc.Workload(batch=1, height=64, width=64, encoder_chunk=4)
    first = tensorrt_build.build_all(tmp_path, _manifest(), work, say=lambda m: None)
    assert sorted(converted) == sorted(f"{n}.fp16.onnx" for n in MODEL_NAMES)  # once per model, not per plan
    assert len(built) == 1 + 2 + 2 + 2  # text encoder b1; UNet b2 (decoder), b4 (chunk); VAEs fp16 + fp32
    converted.clear(), built.clear()
    again = tensorrt_build.build_all(tmp_path, first, work, say=lambda m: None)
    assert converted == [] and built == [] and pc.read_plans(again) == pc.read_plans(first)
    other = BuildSettings(fp16_settings=fp16.Fp16Settings(fold_passes=2))  # changes the fp16 graph: rebuilt
    tensorrt_build.build_all(tmp_path, again, work, other, say=lambda m: None)
    assert len(converted) == len(MODEL_NAMES) and len(built) == 5  # the fp32 VAE plans are reused


# ---- the runner against a fake TensorRT (the API's rules, not its kernels) ---------------------------------------

class _Dims(list):
    pass


def _fake_trt() -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.Dims = _Dims
    trt.ExecutionContextAllocationStrategy = types.SimpleNamespace(USER_MANAGED="user-managed")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.DataType = types.SimpleNamespace(FLOAT="f32", HALF="f16", BF16="bf16", INT32="i32", INT64="i64", INT8="i8",
                                         UINT8="u8", BOOL="bool")
    return trt


@pytest.fixture
def fake_trt(monkeypatch):
    trt = _fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


class FakeContext:
    """Follows TensorRT's rules: input shapes must lie in the (static) profile; output shapes are -1 until every
    input shape is set."""

    def __init__(self, engine: "FakeEngine", strategy):
        self.engine, self.strategy = engine, strategy
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.memory: tuple[int, int] | None = None

    def set_device_memory(self, ptr: int, size: int) -> None:
        self.memory = (ptr, size)

    def set_input_shape(self, name: str, dims) -> bool:
        if tuple(dims) != self.engine.profile[name]:  # also refuses -1
            return False
        self.shapes[name] = tuple(dims)
        return True

    def get_tensor_shape(self, name: str) -> _Dims:
        if set(self.shapes) != set(self.engine.profile):
            return _Dims([-1, *self.engine.declared[name][1:]])
        return _Dims([self.shapes["sample"][0], *self.engine.declared[name][1:]])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True


class FakeEngine:
    """A UNet-like engine: declared shapes keep -1 for the batch axis (ONNX's symbolic 'B'), as TensorRT does."""

    def __init__(self, batch: int):
        self.profile = {"sample": (batch, 4, 8, 8), "timestep": (batch,), "encoder_hidden_states": (batch, 77, 32)}
        self.declared = {"sample": (-1, 4, 8, 8), "timestep": (-1,), "encoder_hidden_states": (-1, 77, 32),
                         "noise_pred": (-1, 4, 8, 8)}
        self.device_memory_size_v2 = 1000 * batch
        self.contexts: list[FakeContext] = []

    num_io_tensors = 4

    def get_tensor_name(self, i: int) -> str:
        return list(self.declared)[i]

    def get_tensor_mode(self, name: str) -> str:
        return "out" if name == "noise_pred" else "in"

    def get_tensor_dtype(self, name: str) -> str:
        return "f32"

    def get_tensor_shape(self, name: str) -> _Dims:
        return _Dims(self.declared[name])

    def create_execution_context(self, strategy=None) -> FakeContext:
        self.contexts.append(FakeContext(self, strategy))
        return self.contexts[-1]


def _record(batch: int, **over) -> dict[str, tuple[int, ...]]:
    return {**FakeEngine(batch).profile, **over}


def test_plan_shapes_come_from_the_record_and_the_context_not_the_engine(fake_trt):
    engine = FakeEngine(4)
    plan = tb.TrtPlan(engine, _record(4), None, "unet-b4")
    assert plan.batch == 4 and plan.io["noise_pred"] == ((4, 4, 8, 8), torch.float32, False)
    assert plan.io["timestep"] == ((4,), torch.float32, True)
    assert engine.contexts[0].shapes == engine.profile  # set from the record: never -1


def test_a_refused_input_shape_is_a_clear_error(fake_trt):
    with pytest.raises(BackendError, match="refused input shape \\[2, 4, 8, 8\\] for 'sample'"):
        tb.TrtPlan(FakeEngine(4), _record(4, sample=(2, 4, 8, 8)), None, "unet-b4")


def test_record_and_engine_must_name_the_same_inputs(fake_trt):
    record = _record(4)
    del record["timestep"]
    with pytest.raises(BackendError, match="does not give a shape"):
        tb.TrtPlan(FakeEngine(4), record, None)


def test_the_shared_workspace_lives_as_long_as_the_runners(fake_trt):
    made: list[tb.Workspace] = []

    def workspace(engines, device):
        made.append(tb.Workspace(engines, device))
        return made[-1]

    engines = [FakeEngine(2), FakeEngine(16)]
    entries = [_entry(shapes=_record(2)), _entry(shapes=_record(16))]
    models = tb.build_models({(UNET, "fp16"): list(zip(engines, entries))}, _manifest(), CPU, None, workspace)
    alive = weakref.ref(made.pop())
    gc.collect()
    assert alive() is not None and alive().nbytes == 16000  # the largest engine's need
    ptr = alive().buffer.data_ptr()
    assert all(c.memory == (ptr, 16000) and c.strategy == "user-managed" for e in engines for c in e.contexts)
    assert models[(UNET, "fp16")].static_batches == (2, 16)
    del models
    gc.collect()
    assert alive() is None  # owned by the runners, not leaked


def test_each_bound_address_set_gets_its_own_context(fake_trt):
    plan = tb.TrtPlan(FakeEngine(2), _record(2), None)
    a, b = (("sample", 1), ("timestep", 2)), (("sample", 3), ("timestep", 4))
    first = plan.context_for(a, capturing=False)
    assert plan.context_for(a, capturing=False) is first and first.addresses == {"sample": 1, "timestep": 2}
    assert plan.context_for(b, capturing=False) is not first
    assert plan.context_for(a, capturing=True) is first  # the capture reuses the context its warm-up ran
    with pytest.raises(BackendError, match="warm"):
        plan.context_for((("sample", 9),), capturing=True)
    for i in range(3 * tb.UNPINNED_CONTEXTS):  # eager address sets come and go; the captured one stays
        plan.context_for((("sample", 100 + i),), capturing=False)
    assert plan.context_for(a, capturing=False) is first
    assert len(plan._contexts) <= tb.UNPINNED_CONTEXTS + 1


# ---- needs TensorRT and a GPU: skipped here with the reason --------------------------------------------------

@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_and_run_tiny_plans_match_onnxruntime(exports, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (not installable from this machine's registries)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT plans need a CUDA GPU")
    import shutil

    from cyclediff.engine.onnxruntime_backend import OrtModel
    from cyclediff.export.models import sample_inputs
    from cyclediff.export.specs import output_shapes
    from cyclediff.export.tensorrt_build import build_all

    folder = tmp_path / "tiny"
    shutil.copytree(exports("tiny"), folder)
    work = pc.Workload(batch=1, height=32, width=32, guided=True, encoder_chunk=4)
    settings = BuildSettings(timing_cache_dir=tmp_path, workspace_bytes=1 << 30)
    built = build_all(folder, Manifest.load(folder), work, settings)
    built.save(folder)
    assert pc.read_plans(build_all(folder, built, work, settings)) == pc.read_plans(built)  # all reused by key
    cuda = torch.device("cuda")
    runners = load_plans(folder, built, cuda)
    latent_hw = (work.height // built.dims.vae_scale, work.width // built.dims.vae_scale)  # what the plans hold
    assert pc.read_plans(built)[UNET][0].shapes["sample"][2:] == latent_hw
    for name, batch in [(TEXT_ENCODER, 1), (UNET, 2), (UNET, 3), (VAE_ENCODER, 1), (VAE_DECODER, 1)]:
        spec = built.models[name].spec  # UNet batch 3 runs padded in the batch-4 plan
        feeds = sample_inputs(spec, built.dims, batch, latent_hw)
        shapes = output_shapes(spec, {k: tuple(v.shape) for k, v in feeds.items()}, built.dims)
        ref = {k: torch.empty(s) for k, s in shapes.items()}
        got = {k: torch.empty(s, device=cuda) for k, s in shapes.items()}
        OrtModel(folder / built.models[name].file, spec, torch.device("cpu"))(feeds, ref)
        runners[name]({k: v.to(cuda) for k, v in feeds.items()}, got)
        torch.cuda.synchronize()
        for k in ref:
            err = float((got[k].cpu() - ref[k]).abs().max() / ref[k].abs().max())
            assert torch.isfinite(got[k]).all() and err < 2e-2, (name, batch, k, err)
