"""Engine.load: backend choice, the torch backend's checkpoint identity check, buffers reused across calls."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from reference import checkpoint_path, sample_image

from cyclediff import Engine
from cyclediff.export.manifest import ManifestError


def test_auto_backend_on_cpu_is_onnxruntime(exports):
    assert Engine.load(exports("tiny"), progress=False).backend == "onnxruntime"


def test_onnxruntime_backend_needs_no_checkpoint(exports, tmp_path):
    """The export dir alone is enough: point the recorded checkpoint somewhere that does not exist."""
    export = tmp_path / "export"
    shutil.copytree(exports("tiny"), export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["checkpoint"].update(kind="folder", path=str(tmp_path / "gone"))  # a built-in would be rebuilt
    (export / "manifest.json").write_text(json.dumps(manifest))
    engine = Engine.load(export, backend="onnxruntime", progress=False)
    out = engine.edit("a cat", "a dog", sample_image(engine.manifest.sample_size), num_inference_steps=3,
                      output_type="np")
    assert out.images.shape[0] == 1
    with pytest.raises(ManifestError, match="gone"):
        Engine.load(export, backend="torch")


def test_torch_backend_refuses_a_checkpoint_changed_since_export(exports, tmp_path):
    from cyclediff.export.pipeline import export

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint_path(exports("tiny")), ckpt)
    export(str(ckpt), tmp_path / "export", quiet=True)
    Engine.load(tmp_path / "export", backend="torch", progress=False)  # loads while unchanged
    config = ckpt / "unet" / "config.json"
    config.write_text(config.read_text().replace('"act_fn": "silu"', '"act_fn": "mish"'))
    with pytest.raises(ManifestError, match="changed since this export"):
        Engine.load(tmp_path / "export", backend="torch")


def test_missing_onnx_file_is_refused(exports, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(exports("tiny"), export)
    manifest = json.loads((export / "manifest.json").read_text())
    (export / manifest["models"]["unet"]["file"]).unlink()
    with pytest.raises(ManifestError, match="missing"):
        Engine.load(export, backend="onnxruntime")


def test_cuda_without_a_gpu_is_a_clear_error(exports):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(RuntimeError, match="no CUDA device"):
        Engine.load(exports("tiny"), device="cuda")


def test_buffers_are_allocated_once_per_shape(exports):
    engine = Engine.load(exports("tiny"), backend="onnxruntime", progress=False)
    image = sample_image(engine.manifest.sample_size)
    engine.edit("a cat", "a dog", image, num_inference_steps=5, output_type="np")
    count, report = engine.workspaces.allocations, engine.memory_report()
    engine.edit("a bird", "a dog", image, num_inference_steps=5, guidance_scale=3.0, output_type="np")
    assert engine.workspaces.allocations == count and report["total"] > 0 and report["total"] == engine.memory_report()["total"]
