"""`cyclediff-run` end to end on the tiny export: outputs, shared encodings, saved codes, and clean failures."""
from __future__ import annotations

import json
import os
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
    ({"--threads": "0"}, "--threads must be >= 1"),
    ({"--concurrency": "0"}, "--concurrency must be >= 1"),
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


# --- every output location is checked before any compute; a failure removes everything the call wrote --------


def _no_engine(tmp: Path) -> str:
    """An --engine that cannot load: an error about the output proves the output was checked first."""
    return str(tmp / "no_engine_here")


@pytest.mark.parametrize("out", ["x" * 260 + ".png", "a_file/edit.png", "deep/" + "d" * 300 + "/edit.png"],
                         ids=["name-too-long", "parent-is-a-file", "folder-name-too-long"])
def test_unwritable_out_fails_before_any_compute(out, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    done = _cli("--engine", _no_engine(tmp_path), "--image", "sample", "--source-prompt", "a", "--prompt", "b",
                "--out", str(tmp_path / out), "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cannot write" in done.stderr and "not a cyclediff export" not in done.stderr
    assert ".tmp" not in done.stderr  # the user's path, never our temporary name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_fails_before_any_compute(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    done = _cli("--engine", _no_engine(tmp_path), "--image", "sample", "--source-prompt", "a", "--prompt", "b",
                "--out", str(folder / "edit.png"), "--quiet")
    assert done.returncode == 2 and "cannot write" in done.stderr and ".tmp" not in done.stderr


def test_save_code_checked_before_compute_too(tmp_path):
    done = _cli("--engine", _no_engine(tmp_path), "--image", "sample", "--source-prompt", "a", "--prompt", "b",
                "--out", str(tmp_path / "edit.png"), "--save-code", str(tmp_path / ("c" * 260)), "--quiet")
    assert done.returncode == 2 and "cannot write" in done.stderr and "c" * 40 in done.stderr
    assert not any(tmp_path.iterdir())


def test_a_failing_code_write_removes_the_images_and_created_folders(engine_dir, tmp_path, monkeypatch, capsys):
    from cyclediff.runtime.core.latent_code import LatentCode

    def full_disk(self, path):
        Path(path).write_bytes(b"half")  # what a real failure leaves: part of the file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LatentCode, "save", full_disk)
    argv = ["--engine", str(engine_dir), *COMMON, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--grid",
            "--out", str(tmp_path / "new" / "deeper" / "edit.png"), "--save-code", str(tmp_path / "codes" / "c.st")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'codes' / 'c.st'}: No space left on device" in err
    assert not any(tmp_path.iterdir())  # no image, no grid, no temp file, no folder it created


def test_outputs_go_into_new_folders(engine_dir, tmp_path):
    out = tmp_path / "a" / "b" / "edit.png"
    assert main(["--engine", str(engine_dir), *COMMON, "--prompt", PROMPTS[0], "--out", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["edit.png"]


def test_help_tells_the_truth_about_fp16(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "fp16 needs cuda" not in text and "runs on the CPU too" in text
    assert "--jobs" in text and "--threads" in text and "--verbose" in text


def test_a_long_but_valid_name_is_written(engine_dir, tmp_path):
    """255 bytes fit the file system; our temporary name beside it must fit too."""
    out = tmp_path / ("x" * 251 + ".png")
    assert main(["--engine", str(engine_dir), *COMMON, "--prompt", PROMPTS[0], "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_odd_size_message_gives_width_by_height_throughout(engine_dir, tmp_path, capsys):
    PIL.Image.new("RGB", (38, 32), "gray").save(tmp_path / "wide.png")  # latents 19 wide, 16 high
    assert main(["--engine", str(engine_dir), "--image", str(tmp_path / "wide.png"), "--source-prompt", "a",
                 "--prompt", "b", "--steps", "3", "--quiet", "--out", str(tmp_path / "edit.png")]) == 2
    err = capsys.readouterr().err
    assert "latents 19x16 (width x height)" in err and "e.g. 40x32" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.png"]


def test_threads_reach_engine_load(engine_dir, tmp_path, monkeypatch, capsys):
    from cyclediff.engine.base import BackendError
    from cyclediff.runtime.engine import Engine

    seen = {}

    def fake_load(folder, **kw):
        seen.update(kw)
        raise BackendError("stop here")  # a user error (exit 2); a plain RuntimeError is a bug (traceback, exit 1)

    monkeypatch.setattr(Engine, "load", staticmethod(fake_load))
    assert main(["--engine", str(engine_dir), *COMMON, "--prompt", "b", "--threads", "3",
                 "--out", str(tmp_path / "edit.png")]) == 2
    assert seen["threads"] == 3 and "stop here" in capsys.readouterr().err


def test_a_sliver_image_is_refused_before_any_size_warning(engine_dir, tmp_path, capsys):
    """A 100000x1 image: one error, that it is too small on a side; not first a warning about its area."""
    PIL.Image.new("RGB", (100000, 1), (10, 20, 30)).save(tmp_path / "sliver.png")
    loud = [a for a in COMMON if a != "--quiet"]  # the old warning showed only without --quiet
    assert main(["--engine", str(engine_dir), *loud, "--image", str(tmp_path / "sliver.png"), "--prompt", "b",
                 "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "smaller than" in err and "warning" not in err and "memory" not in err, err


def test_code_with_an_unused_image_is_refused(runs, engine_dir, tmp_path, capsys):
    """--code with --image (and no --grid, the one use of --image there) would silently ignore the image."""
    code = runs / "code.safetensors"
    assert main(["--engine", str(engine_dir), "--code", str(code), "--image", "sample", "--prompt", "b",
                 "--quiet", "--out", str(tmp_path / "o.png")]) == 2
    assert "--image is not used with --code" in capsys.readouterr().err
    assert main(["--engine", str(engine_dir), "--code", str(code), "--image", "sample", "--grid", "--prompt", "b",
                 "--quiet", "--out", str(tmp_path / "o.png")]) == 0


def test_a_seed_torch_cannot_take_names_the_flag(engine_dir, tmp_path, capsys):
    assert main(["--engine", str(engine_dir), *COMMON, "--seed", str(2**70), "--prompt", "b",
                 "--out", str(tmp_path / "o.png")]) == 2
    assert f"--seed must be in [0, 2**63), got {2**70}" in capsys.readouterr().err


def test_a_bug_is_not_reported_as_bad_input(engine_dir, tmp_path, monkeypatch):
    """A TypeError or a plain RuntimeError out of the engine is a bug: traceback, exit 1 (not 'error:', exit 2)."""
    from cyclediff.runtime.engine import Engine

    def broken(folder, **kw):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(Engine, "load", staticmethod(broken))
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["--engine", str(engine_dir), *COMMON, "--prompt", "b", "--out", str(tmp_path / "o.png")])
