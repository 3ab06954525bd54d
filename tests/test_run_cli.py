"""`cyclediff-run` end to end on the tiny export: outputs, shared encodings, saved codes, and clean failures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from cyclediff.runtime.cli import main

PROMPTS = ("a photo of a castle", "a photo of a barn")
COMMON = ("--image", "sample", "--source-prompt", "a photo of a house", "--steps", "4", "--seed", "0", "--quiet")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cyclediff.runtime.cli", *args], capture_output=True, text=True,
                          check=False, timeout=120)


def _pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


@pytest.fixture(scope="module")
def engine_dir(exports) -> Path:
    return exports("tiny")


@pytest.fixture(scope="module")
def runs(engine_dir, tmp_path_factory) -> Path:
    """One subprocess run with two prompts (+ grid + saved code), then in-process runs to compare against."""
    out = tmp_path_factory.mktemp("runs")
    e = ("--engine", str(engine_dir))
    done = _cli(*e, *COMMON, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--grid",
                "--save-code", str(out / "code.safetensors"), "--out", str(out / "pair.png"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    for i, prompt in enumerate(PROMPTS):  # in-process: same code path, without paying another interpreter start
        assert main([*e, *COMMON, "--prompt", prompt, "--out", str(out / f"single{i}.png")]) == 0
    assert main([*e, "--code", str(out / "code.safetensors"), "--prompt", PROMPTS[0], "--quiet",
                 "--out", str(out / "from_code.png")]) == 0
    return out


def test_output_is_a_png_of_the_engine_size(runs, engine_dir):
    side = json.loads((engine_dir / "manifest.json").read_text())["sample_size"]
    assert _pixels(runs / "single0.png").shape == (side, side, 3)


def test_several_prompts_share_one_encoding_and_match_single_runs(runs):
    assert not (runs / "pair.png").exists()  # several prompts: numbered files only
    for i in range(len(PROMPTS)):
        np.testing.assert_array_equal(_pixels(runs / f"pair_{i}.png"), _pixels(runs / f"single{i}.png"))
    assert not np.array_equal(_pixels(runs / "pair_0.png"), _pixels(runs / "pair_1.png"))


def test_grid_sheet_is_written(runs):
    sheet = _pixels(runs / "pair_grid.png")
    tile = _pixels(runs / "pair_0.png")
    assert sheet.shape[1] > 3 * tile.shape[1]  # input + two edits side by side (upscaled tiles)


def test_saved_code_reproduces_the_edit(runs):
    np.testing.assert_array_equal(_pixels(runs / "from_code.png"), _pixels(runs / "single0.png"))


@pytest.fixture(scope="module")
def junk_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("junk") / "junk.png"
    path.write_bytes(b"this is not an image")
    return path


BAD = [
    ({"--image": "missing.png"}, "no such file"),
    ({"--image": "JUNK"}, "not a readable image"),
    ({"--strength": "0"}, "--strength"),
    ({"--strength": "1.5"}, "--strength"),
    ({"--steps": "0"}, "--steps"),
    ({"--eta": "-0.5"}, "--eta"),
    ({"--guidance-scale": "nan"}, "--guidance-scale"),
    ({"--out": "edit.gif"}, "unknown image format"),
    ({"--engine": "no_such_engine"}, "not a cyclediff export"),
]


def _argv(engine_dir: Path, tmp: Path, junk: Path, change: dict[str, str]) -> tuple[list[str], Path]:
    opts = {"--engine": str(engine_dir), "--image": "sample", "--source-prompt": "a house", "--prompt": "a castle",
            "--steps": "4", "--out": "edit.png"}
    opts.update(change)
    opts["--out"] = str(tmp / opts["--out"])
    opts["--image"] = str(junk) if opts["--image"] == "JUNK" else opts["--image"]
    if opts["--engine"] == "no_such_engine":
        opts["--engine"] = str(tmp / "no_such_engine")
    return [x for kv in opts.items() for x in kv] + ["--quiet"], Path(opts["--out"])


@pytest.mark.parametrize("change,expected", BAD, ids=[f"{k}={v}" for c, _ in BAD for k, v in c.items()])
def test_bad_input_fails_cleanly(change, expected, engine_dir, junk_image, tmp_path, capsys):
    if change.get("--image") == "missing.png":
        change = {"--image": str(tmp_path / "missing.png")}
    argv, out = _argv(engine_dir, tmp_path, junk_image, change)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cyclediff-run: error: ") and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not any(tmp_path.iterdir())  # nothing written, not even a temp file


def test_bad_input_in_a_real_process_has_no_traceback(engine_dir, tmp_path):
    argv, out = _argv(engine_dir, tmp_path, tmp_path, {"--strength": "1.5"})
    done = _cli(*argv)
    assert done.returncode == 2
    assert "cyclediff-run: error: --strength" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
