"""TensorRT plan logic without TensorRT (keys, shapes, manifest entries, refusals); a real build where it exists."""
from __future__ import annotations

import hashlib
import types
from pathlib import Path

import pytest
import torch

from cyclediff.engine.base import BackendError
from cyclediff.engine.tensorrt_backend import check_binding, load_plans, pick_plan
from cyclediff.export import plan_cache as pc
from cyclediff.export.manifest import Manifest, ManifestError, ModelEntry
from cyclediff.export.models import MODEL_NAMES, TEXT_ENCODER, UNET, VAE_DECODER, VAE_ENCODER, Dims, specs
from cyclediff.export.tensorrt_build import BuildSettings, timing_cache_path

DIMS = Dims(text_len=77, text_width=768, text_states=13, latent_channels=4, vae_scale=8, unet_downscale=8)
SHAPES = {"sample": (2, 4, 64, 64), "timestep": (2,), "encoder_hidden_states": (2, 77, 768)}
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


# ---- needs TensorRT and a GPU: skipped here with the reason --------------------------------------------------

@pytest.mark.tensorrt
@pytest.mark.gpu
def test_build_and_run_tiny_plans_match_onnxruntime(exports, tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (not installable from this machine's registries)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT plans need a CUDA GPU")
    import shutil

    from cyclediff.engine.onnxruntime_backend import OrtModel
    from cyclediff.export.models import output_shapes, sample_inputs
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
    for name, batch in [(TEXT_ENCODER, 1), (UNET, 2), (UNET, 3), (VAE_ENCODER, 1), (VAE_DECODER, 1)]:
        spec = built.models[name].spec  # UNet batch 3 runs padded in the batch-4 plan
        feeds = sample_inputs(spec, built.dims, batch, (4, 4))
        shapes = output_shapes(spec, {k: tuple(v.shape) for k, v in feeds.items()}, built.dims)
        ref = {k: torch.empty(s) for k, s in shapes.items()}
        got = {k: torch.empty(s, device=cuda) for k, s in shapes.items()}
        OrtModel(folder / built.models[name].file, spec, torch.device("cpu"))(feeds, ref)
        runners[name]({k: v.to(cuda) for k, v in feeds.items()}, got)
        torch.cuda.synchronize()
        for k in ref:
            err = float((got[k].cpu() - ref[k]).abs().max() / ref[k].abs().max())
            assert torch.isfinite(got[k]).all() and err < 2e-2, (name, batch, k, err)
