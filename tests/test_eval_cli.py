"""`cyclediff-eval` end to end on the tiny checkpoint: the outputs, resume after a kill (same final tables as an
uninterrupted run), and bad input (clear error, exit 2, earlier results untouched)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import PIL.Image
import pytest
from read_only import read_only

from cyclediff.eval.cli import main

GRID = ["--guidance-scale", "1,2", "--strength", "0.6,0.8", "--eta", "0.1,1", "--trials", "2", "--steps", "4",
        "--clip", "tiny", "--sheet-size", "3"]
N_TRIPLETS, PER_TRIPLET, UNITS = 2, 16, 8  # candidates per triplet: 2 g x 2 s x 2 eta x 2 trials; encodings
RESULTS = ("candidates.csv", "selected.csv", "summary.txt")


@pytest.fixture(scope="module")
def inputs(exports, tmp_path_factory) -> tuple[Path, Path]:
    """(engine folder, triplets.csv) with one image file and the bundled sample."""
    engine = exports("tiny")
    folder = tmp_path_factory.mktemp("eval-inputs")
    side = json.loads((engine / "manifest.json").read_text())["sample_size"]
    PIL.Image.new("RGB", (side * 2, side + 8), (200, 60, 40)).save(folder / "red.png")  # cropped + resized
    (folder / "triplets.csv").write_text("image,source_prompt,target_prompt\n"
                                         "red.png,a red house,a blue house\n"
                                         "sample,a photo of a house,a painting of a house in winter\n")
    return engine, folder / "triplets.csv"


def cli(engine: Path, triplets: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cyclediff.eval.cli", "--engine", str(engine), "--triplets", str(triplets),
            "--out", str(out), *GRID, *extra]


@pytest.fixture(scope="module")
def full_run(inputs, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    engine, triplets = inputs
    out = tmp_path_factory.mktemp("eval") / "full"
    done = subprocess.run(cli(engine, triplets, out), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    return out, done


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_writes_every_output(full_run):
    out, done = full_run
    rows = read_csv(out / "candidates.csv")
    assert len(rows) == N_TRIPLETS * PER_TRIPLET
    assert {r["candidate"] for r in rows if r["triplet"] == "0002-red"} == {
        f"g{g}_s{s}_eta{e}_sg1_t{t}" for g in (1, 2) for s in (0.6, 0.8) for e in (0.1, 1) for t in (0, 1)}
    for r in rows:
        assert -1 <= float(r["dclip"]) <= 1 and 0 <= float(r["clip"]) <= 100 and float(r["l2"]) >= 0
        assert 0 < float(r["psnr"]) < 100 and -1 <= float(r["ssim"]) <= 1
    selected = read_csv(out / "selected.csv")
    assert [r["triplet"] for r in selected] == ["0002-red", "0003-sample"]
    for sel in selected:  # best-of-N by directional CLIP
        assert float(sel["dclip"]) == max(float(r["dclip"]) for r in rows if r["triplet"] == sel["triplet"])
        assert (out / sel["image"]).is_file()
    table = (out / "summary.txt").read_text()
    assert table in done.stdout and "best-of-16 by dCLIP" in table and len(table.splitlines()) == 8 + 4
    assert "cand/s" in done.stderr  # the progress bar (with its rate and ETA)
    for t in ("0002-red", "0003-sample"):
        assert PIL.Image.open(out / "sheets" / f"{t}.png").width >= 4 * 160  # input + 3 candidates
        assert len(list((out / "images" / t).glob("*.png"))) == 3  # only the sheet's images are kept
    for plot in ("tradeoff_psnr.png", "tradeoff_ssim.png"):
        assert PIL.Image.open(out / "plots" / plot).format == "PNG"
    assert not list(out.rglob("*.tmp"))


def test_sweep_is_reproducible_by_trial_seed(full_run, inputs):
    """Candidate g=2 s=0.8 eta=0.1 trial 1 (seed 1) is the single edit with seed 1: the batched encode and the
    concurrent decodes change nothing."""
    import cyclediff
    from cyclediff.eval import metrics
    from cyclediff.eval.sweep import to_tensor
    from cyclediff.eval.triplets import load_triplets, read_image

    out, _ = full_run
    engine_dir, triplets = inputs
    triplet = load_triplets(triplets)[0]
    engine = cyclediff.Engine.load(engine_dir, progress=False)
    image = read_image(triplet, engine.manifest.sample_size)
    import torch

    edit = engine.edit(triplet.target_prompt, triplet.source_prompt, image, strength=0.8, num_inference_steps=4,
                       guidance_scale=2.0, eta=0.1, generator=torch.Generator().manual_seed(1), output_type="pt")
    quantized = (edit.images.clamp(0, 1) * 255).round() / 255
    row = next(r for r in read_csv(out / "candidates.csv") if r["candidate"] == "g2_s0.8_eta0.1_sg1_t1"
               and r["triplet"] == triplet.id)
    assert float(row["psnr"]) == pytest.approx(metrics.psnr(quantized, to_tensor(image)).item(), abs=1e-3)


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_tables(full_run, inputs, tmp_path):
    engine, triplets = inputs
    out = tmp_path / "killed"
    proc = subprocess.Popen(cli(engine, triplets, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(list(out.glob("parts/*/*.json"))) < 2:  # killed mid-run: after two encodings are stored
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert 2 <= len(list(out.glob("parts/*/*.json"))) < UNITS and not (out / "summary.txt").exists()
    done = subprocess.run(cli(engine, triplets, out), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr and f"of {N_TRIPLETS * PER_TRIPLET} candidates already done" in done.stderr
    full, _ = full_run
    for name in RESULTS:
        assert (out / name).read_text() == (full / name).read_text(), name
    assert sorted(p.name for p in out.glob("images/*/*.png")) == sorted(p.name for p in full.glob("images/*/*.png"))
    again = subprocess.run(cli(engine, triplets, out, "--quiet"), capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0 and again.stdout.startswith((full / "summary.txt").read_text())


# ---- bad input: clear error, exit 2, nothing written ---------------------------------------------------------
def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


@pytest.mark.parametrize("case, message", [
    ("missing image", "missing.csv:4: image nowhere.png: no such file"),
    ("unreadable image", "line 2: image"),
    ("bad jsonl", "t.jsonl:2: not valid JSON"),
    ("unknown field", "unknown field 'promt'"),
    ("empty triplets", "no triplets"),
    ("empty grid", "--strength '': give comma-separated numbers"),
    ("empty option axis", "--option source_guidance_scale '': give comma-separated numbers"),
    ("no trials", "--trials must be an integer >= 1"),
    ("strength out of range", "--strength values must be in (0, 1]"),
    ("unknown metric", "unknown metric 'fid' for --select; choose one of clip, dclip, psnr, ssim, l2"),
    ("unknown method option", "unknown method option 'skip' for --method cycle; its options are: source_guidance"),
    ("unknown method", "unknown --method 'p2p'"),
    ("missing clip", "hf download nobody/no-clip"),
    ("other arguments", "holds a sweep with other arguments (grid:"),
])
def test_bad_input_is_refused_and_keeps_results(case, message, full_run, inputs, tmp_path, capsys, monkeypatch):
    engine, triplets = inputs
    out, _ = full_run
    before = snapshot(out)
    src = triplets.read_text()
    args = {"triplets": triplets, "extra": []}
    if case == "missing image":
        args["triplets"] = write(triplets.parent, "missing.csv", src + "nowhere.png,a,b\n")
    elif case == "unreadable image":
        (tmp_path / "cut.png").write_bytes((triplets.parent / "red.png").read_bytes()[:40])
        args["triplets"] = write(tmp_path, "t.csv", "image,source_prompt,target_prompt\ncut.png,a,b\n")
    elif case == "bad jsonl":
        args["triplets"] = write(tmp_path, "t.jsonl", '{"image": "sample", "source_prompt": "a", '
                                                      '"target_prompt": "b"}\n{not json\n')
    elif case == "unknown field":
        args["triplets"] = write(tmp_path, "t.csv", "image,source_prompt,promt\nsample,a,b\n")
    elif case == "empty triplets":
        args["triplets"] = write(tmp_path, "t.csv", "image,source_prompt,target_prompt\n")
    elif case == "missing clip":
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    extra = {"empty grid": ["--strength", ""], "empty option axis": ["--option", "source_guidance_scale="],
             "no trials": ["--trials", "0"], "strength out of range": ["--strength", "0.5,1.5"],
             "unknown metric": ["--select", "fid"], "unknown method option": ["--option", "skip=1,2"],
             "unknown method": ["--method", "p2p"], "missing clip": ["--clip", "nobody/no-clip"],
             "other arguments": ["--eta", "0.5"]}.get(case, [])
    assert main(cli(engine, args["triplets"], out)[3:] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("cyclediff-eval: error: ") and message in err, err
    assert snapshot(out) == before


def test_other_arguments_name_only_what_changed(full_run, inputs, capsys):
    engine, triplets = inputs
    out, _ = full_run
    before = snapshot(out)
    assert main(cli(engine, triplets, out)[3:] + ["--eta", "0.5", "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "holds a sweep with other arguments (grid: etas [0.1, 1.0] -> [0.5], steps 4 -> 5); run again" in err, err
    assert "strengths" not in err and "guidance_scales" not in err and "triplets" not in err  # unchanged: unsaid
    assert snapshot(out) == before


def test_config_difference_walks_the_grid_and_the_triplets():
    from cyclediff.eval.store import config_difference

    old = {"grid": {"etas": [0.1, 1], "trials": 2}, "size": 32, "dtype": "bf16",
           "triplets": [{"id": "a", "target": "a cat"}, {"id": "b", "target": "a dog"}]}
    new = {"grid": {"etas": [0.1, 1], "trials": 3}, "size": 32,
           "triplets": [{"id": "a", "target": "a cat"}, {"id": "b", "target": "a wolf"}, {"id": "c", "target": "x"}]}
    assert config_difference(old, new) == (
        'dtype: "bf16" -> (none); grid: trials 2 -> 3; '
        'triplets: [1].target "a dog" -> "a wolf", [2] (none) -> {"id": "c", "target": "x"}')


def _read_only(monkeypatch) -> None:
    from cyclediff.eval import sweep

    read_only(monkeypatch, sweep, "load_triplets", "the triplets were read")


def test_read_only_out_is_refused_before_any_work(inputs, tmp_path, capsys, monkeypatch):
    engine, triplets = inputs
    _read_only(monkeypatch)
    assert main(cli(engine, triplets, tmp_path / "run")[3:]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cyclediff-eval: error: ") and len(err.strip().splitlines()) == 1, err
    assert f"--out {tmp_path / 'run'} is not writable: Read-only file system" in err and "Errno" not in err
    assert not any(tmp_path.iterdir())


def test_out_under_a_file_is_refused_in_a_real_process(inputs, tmp_path):
    engine, triplets = inputs
    (tmp_path / "a_file").write_text("not a folder")
    done = subprocess.run(cli(engine, triplets, tmp_path / "a_file" / "run"), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "Errno" not in done.stderr, done.stderr
    assert done.stderr.startswith("cyclediff-eval: error: --out ") and len(done.stderr.strip().splitlines()) == 1
    assert "above it exists and is not a folder; choose a folder path for --out" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
