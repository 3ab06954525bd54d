"""Both CLIs print one line per real problem: no library chatter (onnxruntime graph notes, diffusers' accelerate
advice, transformers' token-length note) unless --verbose; plus the small inconsistencies a new user met."""
from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("[W:onnxruntime", "UnsqueezeElimination", "accelerate", "Token indices sequence length", "Traceback",
         "Warning:", "warnings.warn")
LONG_PROMPT = " ".join(["a castle on a snowy hill at dawn"] * 20)  # ~160 CLIP tokens


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=False,
                          timeout=600)


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(n in line for n in NOISE)]


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("fp16") / "tiny"
    return out, _run("cyclediff.export.cli", "--ckpt", "tiny", "--out", str(out), "--fp16", "--quiet")


def test_fp16_export_with_quiet_prints_nothing(fp16_export):
    _, done = fp16_export
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""


def test_export_without_quiet_has_no_library_noise(tmp_path):
    done = _run("cyclediff.export.cli", "--ckpt", "tiny", "--out", str(tmp_path / "tiny"))
    assert done.returncode == 0, done.stderr
    assert _noise(done.stderr) == []


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_an_edit_warns_once_about_a_long_prompt_and_says_nothing_else(backend, fp16_export, tmp_path):
    engine, _ = fp16_export
    done = _run("cyclediff.runtime.cli", "--engine", str(engine), "--backend", backend, "--image", "sample",
                "--source-prompt", "a house", "--prompt", LONG_PROMPT, "--steps", "3", "--seed", "0", "--quiet",
                "--out", str(tmp_path / "edit.png"))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cyclediff-run: warning: prompt truncated"), lines
    assert len(lines[0]) < 200 and LONG_PROMPT not in lines[0]  # where the cut is, not the whole prompt


def test_verbose_shows_the_libraries_warnings_too(fp16_export, tmp_path):
    engine, _ = fp16_export
    done = _run("cyclediff.runtime.cli", "--engine", str(engine), "--image", "sample", "--source-prompt", "a house",
                "--prompt", LONG_PROMPT, "--steps", "3", "--seed", "0", "--quiet", "--verbose",
                "--out", str(tmp_path / "edit.png"))
    assert done.returncode == 0, done.stderr
    assert "prompt truncated" in done.stderr  # the libraries have nothing to add on this path any more


@pytest.mark.parametrize("verbose", [True, False])
def test_verbose_lowers_the_libraries_thresholds(verbose, monkeypatch):
    from cyclediff.runtime import verbosity

    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    verbosity.configure("test", verbose)
    assert os.environ["TRANSFORMERS_VERBOSITY"] == os.environ["DIFFUSERS_VERBOSITY"] == (
        "warning" if verbose else "error")
    verbosity.configure("test", False)  # leave the process quiet for the other tests


def test_the_hub_hint_names_a_command_that_is_installed():
    from cyclediff.export.checkpoint import CheckpointError, resolve

    with pytest.raises(CheckpointError, match="`hf download no-such-owner/no-such-model`"):
        resolve("no-such-owner/no-such-model")
    scripts = {e.name for e in importlib.metadata.distribution("huggingface_hub").entry_points
               if e.group == "console_scripts"}
    assert "hf" in scripts
    assert "huggingface-cli" not in (ROOT / "README.md").read_text()


def test_the_config_hint_fits_whether_config_was_given():
    from cyclediff.export.checkpoint import _single_file_fix

    assert "pass --config" in _single_file_fix(None)
    given = _single_file_fix("~/models/sd15")
    assert "pass --config" not in given and "--config ~/models/sd15" in given


def test_dir_lists_each_public_name_once():
    import cyclediff

    _ = cyclediff.Engine  # resolved names land in globals() too
    names = dir(cyclediff)
    assert len(names) == len(set(names)) and "Engine" in names


def test_every_package_folder_is_declared():
    """setuptools warns (a screenful, on every `pip install -e`) about an importable folder it was not told of."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    for package, folder in config["package-dir"].items():
        for sub in (ROOT / folder).rglob("*"):
            if sub.is_dir() and sub.name.isidentifier() and sub.name != "__pycache__":
                assert f"{package}.{'.'.join(sub.relative_to(ROOT / folder).parts)}" in declared, sub
