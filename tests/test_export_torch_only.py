"""`cyclediff-export --torch-only`: the graphs without the ONNX Runtime / OpenVINO steps, for the torch backend
alone (what benchmarks/gpu_check.sh exports on a GPU machine). Same edits on the torch backend as a full export;
other backends refuse it by name; a later full export into the folder makes it whole."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from reference import sample_image

from cyclediff import Engine
from cyclediff.engine.base import BackendError
from cyclediff.export.manifest import Manifest
from cyclediff.export.onnx_export import ExportSettings
from cyclediff.export.pipeline import TORCH_ONLY_PARITY, run


def _edit(engine: Engine) -> np.ndarray:
    return engine.edit("a cat", "a dog", sample_image(engine.manifest.sample_size), num_inference_steps=6, eta=0.1,
                       output_type="np", generator=torch.Generator().manual_seed(0)).images


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("torch-only") / "export"
    return out, run("tiny", out, quiet=True, settings=ExportSettings(torch_only=True))


@pytest.fixture
def torch_only(made):
    return made[0]


def test_a_torch_only_export_has_no_ort_or_openvino_steps(made):
    torch_only, report = made
    m = Manifest.load(torch_only)
    assert m.torch_only and m.extra["torch_only"] is True
    assert "ort_optimized" not in m.extra and "openvino_ir" not in m.extra
    assert not (torch_only / "ort").exists() and not (torch_only / "openvino").exists()
    assert report.parity and all(p == TORCH_ONLY_PARITY for p in report.parity.values())


def test_its_torch_edits_equal_a_full_exports(torch_only, exports):
    full = Engine.load(exports("tiny"), backend="torch", progress=False)
    fast = Engine.load(torch_only, progress=False)  # auto picks torch for a torch-only export
    assert fast.backend == "torch"
    np.testing.assert_array_equal(_edit(fast), _edit(full))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_other_backends_refuse_it_with_the_fix(torch_only, backend):
    with pytest.raises(BackendError, match=r"torch-only export.*backend='torch'.*without --torch-only"):
        Engine.load(torch_only, backend=backend, progress=False)


def test_a_full_export_into_the_folder_makes_it_whole(torch_only, tmp_path):
    import shutil

    folder = tmp_path / "again"
    shutil.copytree(torch_only, folder)
    report = run("tiny", folder, quiet=True)
    m = Manifest.load(folder)
    assert not m.torch_only and "torch_only" not in m.extra and m.extra.get("ort_optimized")
    assert set(report.exported) == set(m.models)  # nothing reused from the unverified export
    assert all(p != TORCH_ONLY_PARITY for p in report.parity.values())
    Engine.load(folder, backend="onnxruntime", progress=False)


@pytest.mark.parametrize("extra", ["--fp16", "--torchscript", "--attention-maps", "--trt"])
def test_the_cli_refuses_what_a_torch_only_export_cannot_hold(tmp_path, extra):
    out = tmp_path / "x"
    done = subprocess.run([sys.executable, "-m", "cyclediff.export.cli", "--ckpt", "tiny", "--out", str(out),
                           "--torch-only", extra], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    assert "torch-only" in done.stderr and "drop" in done.stderr
    assert not out.exists()
