"""`cyclediff-run --jobs FILE.jsonl`: each job's files equal a single `cyclediff-run` with the same settings; a bad
line is reported with its number and skipped; a job that fails leaves none of its files; exit status 1."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from cyclediff.runtime import jobs
from cyclediff.runtime.cli import main

# (prompt(s), settings, the same edit as cyclediff-run flags)
GOOD = {
    1: ("a photo of a castle", {"num_inference_steps": 4, "seed": 0},
        ["--steps", "4", "--seed", "0"]),
    2: (["a photo of a barn", "a photo of a mill"], {"num_inference_steps": 5, "seed": 1, "strength": 0.6},
        ["--steps", "5", "--seed", "1", "--strength", "0.6"]),
    4: ("a photo of a tower", {"num_inference_steps": 4, "seed": 2, "guidance_scale": 1.0, "eta": 0.0},
        ["--steps", "4", "--seed", "2", "--guidance-scale", "1", "--eta", "0"]),
    5: ("a photo of a boat", {"preset": "paper", "num_inference_steps": 6, "seed": 3, "clip_skip": 1,
                              "source_guidance_scale": 2.0},
        ["--preset", "paper", "--steps", "6", "--seed", "3", "--clip-skip", "1", "--source-guidance-scale", "2"]),
}
# line number -> (the line's text, a fragment the error message must contain)
BAD = {
    3: ("{not json", "not valid JSON"),
    6: (json.dumps({"image": "house.png", "source_prompt": "a house", "promt": "a cat", "out": "e/t.png"}),
        "unknown key 'promt'"),
    7: (json.dumps({"image": "nowhere.png", "source_prompt": "a house", "prompt": "a cat", "out": "e/n.png"}),
        "image nowhere.png: no such file"),
    8: (json.dumps({"image": "house.png", "source_prompt": "a house", "prompt": "a cat", "out": "e/s.png",
                    "settings": {"strength": 2}}), "strength"),
    9: (json.dumps({"image": "house.png", "source_prompt": "a house", "prompt": "a cat", "out": "e/j1.png"}),
        "also written by line 1"),
    10: (json.dumps({"image": "house.png", "source_prompt": "a house", "prompt": "a cat", "out": "e/g.gif"}),
         "unknown image format"),
    11: (json.dumps({"image": "house.png", "source_prompt": "a house", "prompt": "a cat", "out": "e/x.png",
                     "settings": {"seed": 1.5}}), "settings.seed must be an integer"),
}
# Valid lines that fail when they run: an image whose latents are odd (34 px / 2 = 17), and a truncated PNG.
FAILING = {12: ("odd.png", "not a multiple"), 13: ("cut.png", "not a readable image")}
SOURCE = "a photo of a house"


@pytest.fixture(scope="module")
def engine_dir(exports) -> Path:
    return exports("tiny")


@pytest.fixture(scope="module")
def folder(engine_dir, tmp_path_factory) -> Path:
    """A jobs file (relative paths: they resolve against its folder) and its input images."""
    from cyclediff.runtime.cli import sample_path

    side = json.loads((engine_dir / "manifest.json").read_text())["sample_size"]
    root = tmp_path_factory.mktemp("jobs")
    with PIL.Image.open(sample_path()) as img:
        img.convert("RGB").resize((side, side)).save(root / "house.png")
        img.convert("RGB").resize((side + 2, side + 2)).save(root / "odd.png")
    (root / "cut.png").write_bytes((root / "house.png").read_bytes()[:200])
    lines = {n: json.dumps({"image": "house.png", "source_prompt": SOURCE, "prompt": p, "out": f"e/j{n}.png",
                            "settings": s}) for n, (p, s, _) in GOOD.items()}
    lines |= {n: text for n, (text, _) in BAD.items()}
    lines |= {n: json.dumps({"image": image, "source_prompt": SOURCE, "prompt": "a cat", "out": f"e/f{n}.png",
                             "settings": {"num_inference_steps": 4}}) for n, (image, _) in FAILING.items()}
    (root / "jobs.jsonl").write_text("\n".join(lines[n] for n in range(1, max(lines) + 1)) + "\n")
    return root


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cyclediff.runtime.cli", *args], capture_output=True, text=True,
                          check=False, timeout=300)


def _pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as img:
        return np.asarray(img.convert("RGB")).astype(np.int16)


def _outs(n: int) -> list[str]:
    prompts = GOOD[n][0]
    return [f"j{n}.png"] if isinstance(prompts, str) else [f"j{n}_{i}.png" for i in range(len(prompts))]


@pytest.fixture(scope="module")
def singles(folder, engine_dir, tmp_path_factory) -> Path:
    """The same edits, one cyclediff-run each (in-process: the same code path without an interpreter start)."""
    out = tmp_path_factory.mktemp("singles")
    for n, (prompts, _, flags) in GOOD.items():
        prompt_flags = [x for p in ([prompts] if isinstance(prompts, str) else prompts) for x in ("--prompt", p)]
        assert main(["--engine", str(engine_dir), "--image", str(folder / "house.png"), "--source-prompt", SOURCE,
                     *prompt_flags, *flags, "--quiet", "--out", str(out / f"j{n}.png")]) == 0
    return out


@pytest.fixture(scope="module", params=[1, 4], ids=["concurrency1", "concurrency4"])
def ran(request, folder, engine_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, int]:
    root = tmp_path_factory.mktemp(f"run{request.param}")
    for name in ("jobs.jsonl", "house.png", "odd.png", "cut.png"):
        (root / name).write_bytes((folder / name).read_bytes())
    done = _run("--engine", str(engine_dir), "--jobs", str(root / "jobs.jsonl"), "--concurrency",
                str(request.param))
    return root, done, request.param


def test_job_outputs_equal_single_runs(ran, singles):
    root, done, concurrency = ran
    assert "Traceback" not in done.stderr, done.stderr
    for n in GOOD:
        for name in _outs(n):
            diff = np.abs(_pixels(root / "e" / name) - _pixels(singles / name)).max()
            # Alone, a job is the very same computation; batched with others (the Engine may merge concurrent
            # UNet calls) it may differ by float noise, at most one 8-bit level.
            assert diff <= (0 if concurrency == 1 else 1), (name, diff)


def test_bad_lines_are_reported_with_their_number_and_skipped(ran):
    _, done, _ = ran
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    for n, (_, fragment) in {**BAD, **FAILING}.items():
        mine = [e for e in errors if f"jobs.jsonl line {n}: " in e]
        assert len(mine) == 1 and fragment in mine[0], (n, errors)
    assert len(errors) == len(BAD) + len(FAILING)


def test_failed_and_bad_lines_leave_no_files(ran):
    root, _, _ = ran
    written = sorted(p.name for p in (root / "e").iterdir())
    assert written == sorted(name for n in GOOD for name in _outs(n))  # no temp file, nothing of a failed job


def test_summary_table_lists_every_line(ran):
    _, done, _ = ran
    rows = {int(line.split()[0]): line.split() for line in done.stdout.splitlines() if line.split()
            and line.split()[0].isdigit()}
    assert sorted(rows) == sorted([*GOOD, *BAD, *FAILING])
    assert all(rows[n][2] == "ok" for n in GOOD)
    assert all(rows[n][2:4] == ["bad", "line"] for n in BAD)
    assert all(rows[n][2] == "failed" for n in FAILING), done.stdout


def test_an_all_good_file_exits_0_and_quiet_prints_nothing(engine_dir, folder, tmp_path):
    (tmp_path / "house.png").write_bytes((folder / "house.png").read_bytes())
    line = {"image": "house.png", "source_prompt": SOURCE, "prompt": "a cat", "out": "cat.png"}
    (tmp_path / "ok.jsonl").write_text(json.dumps(line) + "\n\n")  # blank lines are skipped
    assert main(["--engine", str(engine_dir), "--jobs", str(tmp_path / "ok.jsonl"), "--steps", "3", "--seed", "0",
                 "--quiet"]) == 0
    assert (tmp_path / "cat.png").is_file()


@pytest.mark.parametrize("flag", [["--prompt", "x"], ["--image", "sample"], ["--out", "x.png"], ["--grid"]])
def test_per_line_flags_are_refused_with_jobs(flag, engine_dir, tmp_path, capsys):
    (tmp_path / "j.jsonl").write_text("{}\n")
    assert main(["--engine", str(engine_dir), "--jobs", str(tmp_path / "j.jsonl"), *flag, "--quiet"]) == 2
    assert "cannot be combined with --jobs" in capsys.readouterr().err


def test_a_missing_jobs_file_is_a_command_line_error(engine_dir, tmp_path, capsys):
    assert main(["--engine", str(engine_dir), "--jobs", str(tmp_path / "none.jsonl"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("change,fragment", [
    ({"prompt": []}, "non-empty list"),
    ({"prompt": 3}, "prompt must be a string"),
    ({"source_prompt": None}, "source_prompt must be a string"),
    ({"settings": {"num_inference_steps": 4.0}}, "must be an integer"),
    ({"settings": {"guidance_scale": "7"}}, "must be a number"),
    ({"settings": {"preset": "fast"}}, "settings.preset"),
    ({"settings": {"steps": 4}}, "unknown setting 'steps'"),
    ({"settings": {"strength": 0.1, "num_inference_steps": 5}}, "zero denoising steps"),
    ({"out": ""}, "out must name a file"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_line_validation(change, fragment, folder):
    line = {"image": "house.png", "source_prompt": "a", "prompt": "b", "out": "o.png", **change}
    with pytest.raises(jobs.LineError, match=fragment):
        jobs.parse_line(1, json.dumps(line), folder, {})


def test_command_line_settings_are_defaults_that_a_line_overrides(folder):
    line = {"image": "sample", "source_prompt": "a", "prompt": "b", "out": "o.png", "settings": {"eta": 0.3}}
    job = jobs.parse_line(1, json.dumps(line), folder, {"num_inference_steps": 7, "eta": 0.0, "seed": 5})
    assert (job.params.num_inference_steps, job.params.eta, job.seed) == (7, 0.3, 5)
    assert job.outs == (folder / "o.png",)


def test_an_unwritable_out_is_a_bad_line_and_the_others_run(engine_dir, folder, tmp_path, capsys):
    """An out under a regular file cannot be written: that line is reported with its number (exit 1), the
    other line still runs and writes its file."""
    for name in ("house.png", "blocker"):
        (tmp_path / name).write_bytes((folder / "house.png").read_bytes())
    lines = [{"image": "house.png", "source_prompt": SOURCE, "prompt": "a cat", "out": "ok.png",
              "settings": {"num_inference_steps": 4}},
             {"image": "house.png", "source_prompt": SOURCE, "prompt": "a cat", "out": "blocker/no.png",
              "settings": {"num_inference_steps": 4}}]
    (tmp_path / "j.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    assert main(["--engine", str(engine_dir), "--jobs", str(tmp_path / "j.jsonl"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "j.jsonl line 2: " in err and "blocker" in err, err
    assert (tmp_path / "ok.png").is_file()


def test_ctrl_c_stops_a_running_job_at_its_next_model_call(engine_dir, folder, tmp_path, monkeypatch):
    """Ctrl-C while a job runs: the job stops at its next model call (its cancel_scope sees the stop), the
    queued job never starts, and neither writes a file. The first model call is held until the stop is set, so
    exactly one model call runs: none after the interrupt."""
    import threading

    import cyclediff

    engine = cyclediff.Engine.load(engine_dir, progress=False)
    parsed = [jobs.parse_line(n, json.dumps({"image": str(folder / "house.png"), "source_prompt": SOURCE,
                                             "prompt": "a cat", "out": str(tmp_path / f"o{n}.png"),
                                             "settings": {"num_inference_steps": 20}}), folder, {})
              for n in (1, 2)]
    events: list[threading.Event] = []

    class RecordedEvent(threading.Event):  # run_all's stop event, so the held call can wait for it
        def __init__(self):
            super().__init__()
            events.append(self)

    calls, first = [], threading.Event()
    real = engine.dispatcher.call

    def held(model, feeds, outputs):
        calls.append(model)
        first.set()
        events[0].wait(60)
        return real(model, feeds, outputs)

    def interrupted(futures):
        assert first.wait(60)
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs.threading, "Event", RecordedEvent)
    monkeypatch.setattr(engine.dispatcher, "call", held)
    monkeypatch.setattr(jobs.concurrent.futures, "as_completed", interrupted)
    results = jobs.run_all(engine, parsed, 1, quiet=True, name=tmp_path / "j.jsonl")
    assert sorted((r.line, r.status) for r in results) == [(1, "cancelled"), (2, "cancelled")]
    assert len(calls) == 1, calls
    assert not list(tmp_path.glob("o*.png"))
