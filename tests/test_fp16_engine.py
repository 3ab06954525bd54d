"""fp16 engines against fp32 (on the CPU: slow kernels, same numerics): PSNR >= 35 dB and never non-finite."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from reference import sample_image

from cyclediff import Engine
from cyclediff.engine.base import BackendError

ARGS = dict(prompt="a photo of a cat", source_prompt="a photo of a dog", num_inference_steps=10, output_type="np")


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    from cyclediff.export.pipeline import export

    out = tmp_path_factory.mktemp("fp16-export")
    manifest = export("tiny", out, quiet=True, fp16=True)
    assert set(manifest.extra["fp16_onnx"]) == set(manifest.models)
    return out


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-20)))


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_fp16_edit_is_close_to_fp32(fp16_export, backend):
    ref_engine = Engine.load(fp16_export, backend=backend, progress=False)
    image = sample_image(ref_engine.manifest.sample_size)
    ref = ref_engine.edit(image=image, **ARGS, generator=torch.Generator().manual_seed(0)).images
    engine = Engine.load(fp16_export, backend=backend, dtype="fp16", progress=False)
    out = engine.edit(image=image, **ARGS, generator=torch.Generator().manual_seed(0)).images
    psnr = _psnr(out, ref)
    print(f"{backend} fp16 vs fp32: PSNR {psnr:.1f} dB, max abs {np.abs(out - ref).max():.2e}")
    assert np.isfinite(out).all() and psnr >= 35.0
    assert np.abs(out - ref).max() > 0  # the fp16 graphs really ran


def test_fp16_without_fp16_graphs_says_how_to_export(exports):
    with pytest.raises(BackendError, match="--fp16"):
        Engine.load(exports("tiny"), backend="onnxruntime", dtype="fp16")


def test_changed_fp16_graph_is_refused(fp16_export, tmp_path):
    import json
    import shutil

    from cyclediff.export.manifest import ManifestError

    copy = tmp_path / "export"
    shutil.copytree(fp16_export, copy)
    unet = copy / json.loads((copy / "manifest.json").read_text())["extra"]["fp16_onnx"]["unet"]["file"]
    unet.write_bytes(unet.read_bytes()[:-16])  # truncated
    with pytest.raises(ManifestError, match="fp16 graph of unet.*--fp16"):
        Engine.load(copy, backend="onnxruntime", dtype="fp16")
