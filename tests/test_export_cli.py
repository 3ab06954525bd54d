"""`cyclediff-export` as a command: help, clean errors, a kill -9 mid-export, and resuming after it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from read_only import read_only

from cyclediff.export.cli import main
from cyclediff.export.manifest import MANIFEST, Manifest, ManifestError
from cyclediff.export.specs import MODEL_NAMES

PREFIX = "cyclediff-export: error: "
# Runs the real CLI in a child that parks itself (and says so in a marker file) at one point of the export,
# so that the test kills it there for sure instead of after a guessed delay.
PARKED_CHILD = """
import sys, time
from pathlib import Path
from cyclediff.export import pipeline
from cyclediff.export.cli import main

marker, point = Path(sys.argv[1]), sys.argv[2]

def park(*args, **kwargs):
    marker.write_text(point)
    time.sleep(600)

if point == "manifest":
    pipeline.Manifest.save = park
else:
    real = pipeline.export_onnx
    def export_onnx(exporter, module, spec, *args, **kwargs):
        if spec.name == point:
            park()
        return real(exporter, module, spec, *args, **kwargs)
    pipeline.export_onnx = export_onnx
sys.exit(main(sys.argv[3:]))
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cyclediff.export.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_help_lists_options_and_examples():
    done = _cli("--help")
    assert done.returncode == 0
    for text in ("--ckpt", "--out", "--config", "--opset", "--trace-size", "--quiet", "--force", "examples:"):
        assert text in done.stdout


@pytest.mark.parametrize("ckpt, message", [
    ("does/not/exist.safetensors", "does not exist"),
    ("no-such-model", "is not a folder, a .safetensors/.ckpt file, a hub id"),
])
def test_bad_ckpt_is_a_clean_error(ckpt, message, tmp_path):
    done = _cli("--ckpt", ckpt, "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.startswith(PREFIX) and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (("--opset", "12"), "--opset 12 is not supported"),
    (("--trace-size", "0"), "must be >= 1"),
    (("--config", "somewhere"), "--config is for single-file checkpoints"),
])
def test_bad_options_are_clean_errors(args, message, tmp_path, capsys):
    assert main(["--ckpt", "tiny", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(PREFIX) and message in err


def test_out_must_be_an_export_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--ckpt", "tiny", "--out", str(tmp_path)]) == 2
    assert "not a cyclediff export" in capsys.readouterr().err
    assert main(["--ckpt", "tiny", "--out", str(tmp_path / "notes.txt")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_v_prediction_checkpoint_is_refused(tmp_path, capsys):
    from cyclediff.export.checkpoint import resolve

    folder = shutil.copytree(resolve("tiny").path, tmp_path / "vpred")
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "prediction_type": "v_prediction"}))
    assert main(["--ckpt", str(folder), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(PREFIX) and "prediction_type='v_prediction'" in err and "epsilon" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("point", ["unet", "manifest"])
def test_killed_export_does_not_load_and_resumes(point, exports, tmp_path):
    out = shutil.copytree(exports("tiny-trailing"), tmp_path / "out")  # a complete export of another checkpoint
    marker = tmp_path / "parked"
    child = subprocess.Popen([sys.executable, "-c", PARKED_CHILD, str(marker), point, "--ckpt", "tiny", "--out",
                              str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(marker, child)
    finally:
        child.kill()  # SIGKILL: no cleanup handlers run
        child.communicate()
    with pytest.raises(ManifestError, match="no manifest.json"):
        Manifest.load(out)
    before = {n: (out / f"{n}.onnx").stat().st_mtime_ns for n in MODEL_NAMES if (out / f"{n}.onnx").exists()}
    assert "text_encoder" in before  # exported for 'tiny' before the kill (tiny-trailing's files were removed)
    if point == "unet":  # the real command once; in-process otherwise (an interpreter start costs seconds)
        done = _cli("--ckpt", "tiny", "--out", str(out), "--quiet")
        assert done.returncode == 0 and done.stdout == "", done.stderr
    else:
        assert main(["--ckpt", "tiny", "--out", str(out), "--quiet"]) == 0
    m = Manifest.load(out)
    assert m.checkpoint["spec"] == "tiny"
    assert {n: (out / f"{n}.onnx").stat().st_mtime_ns for n in before} == before  # finished models were reused
    assert not (out / ".staging").exists() and (out / MANIFEST).is_file()


def _wait_for(marker: Path, child: subprocess.Popen) -> None:
    """Poll until the child parks; a child that exits first is a failure (with its stderr)."""
    deadline = time.monotonic() + 280
    while not marker.exists():
        if child.poll() is not None:
            pytest.fail(f"export ended (rc {child.returncode}) before parking: {child.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail("export did not reach the park point")
        time.sleep(0.1)


def test_trt_without_tensorrt_fails_before_touching_out(tmp_path):
    from cyclediff.export.plan_cache import TensorRTUnavailable, require_tensorrt

    try:
        require_tensorrt()
    except TensorRTUnavailable:
        pass
    else:
        pytest.skip("TensorRT and a GPU are present here")
    result = _cli("--ckpt", "tiny", "--out", str(tmp_path / "out"), "--trt")
    assert result.returncode == 2 and "TensorRT" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


# ---- an --out that cannot be written is refused before any work, in one line -----------------------------------
def _read_only(monkeypatch) -> None:
    from cyclediff.export import checkpoint

    read_only(monkeypatch, checkpoint, "resolve", "the checkpoint was resolved")


@pytest.mark.parametrize("where", ["new", "existing"])
def test_read_only_out_is_refused_before_any_work(where, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    if where == "existing":
        out.mkdir()
    _read_only(monkeypatch)
    assert main(["--ckpt", "tiny", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(PREFIX) and len(err.strip().splitlines()) == 1, err
    assert f"--out {out} is not writable: Read-only file system" in err and "choose a folder you can write" in err
    assert "Errno" not in err and sorted(p.name for p in tmp_path.iterdir()) == (["out"] if where == "existing"
                                                                                else [])


def test_read_only_out_is_refused_by_the_python_api_too(tmp_path, monkeypatch):
    from cyclediff.export.pipeline import export
    from cyclediff.export.writable import FolderNotWritable

    _read_only(monkeypatch)
    with pytest.raises(FolderNotWritable, match="--out .* is not writable: Read-only file system") as err:
        export("tiny", tmp_path / "out", quiet=True)
    assert err.value.field == "--out"


def test_out_under_a_file_is_refused_in_a_real_process(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    done = _cli("--ckpt", "tiny", "--out", str(tmp_path / "a_file" / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr and "Errno" not in done.stderr, done.stderr
    assert done.stderr.startswith(PREFIX) and len(done.stderr.strip().splitlines()) == 1
    assert f"{tmp_path / 'a_file'} above it exists and is not a folder; choose a folder path for --out" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_writable_out_passes_the_check_and_keeps_nothing(tmp_path):
    from cyclediff.export.writable import check_writable

    check_writable(tmp_path / "new" / "deeper")  # created later, by the export: nothing made now
    (tmp_path / "existing").mkdir()
    check_writable(tmp_path / "existing")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["existing"]
