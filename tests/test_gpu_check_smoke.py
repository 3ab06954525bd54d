"""benchmarks/gpu_check.sh with CPU_SMOKE=1 (every stage tiny on the CPU), as it will run on the GPU machine, and
gpu_key.py's promise that a row that fails, or a run cut short, leaves every row before it on disk."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

KEY_ROWS = ["cyclediff fp16 + CUDA graphs", "cyclediff fp16 eager", "diffusers fp16 eager", "fp32 reference",
            "fidelity vs fp32 reference"]


def test_the_cpu_smoke_runs_every_stage_in_order_and_keeps_the_key_rows(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "CPU_SMOKE": "1", "PYTHON": sys.executable, "CYCLEDIFF_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(results)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    stages = json.loads((results / "results.json").read_text())["stages"]
    order = [s["stage"] for s in stages]
    assert order == ["env", "wheels", "imports", "export", "key", "pytest", "throughput", "compile"], order
    status = {s["stage"]: s["status"] for s in stages}
    assert all(status[n] == "passed" for n in ("env", "imports", "export", "key", "pytest", "throughput")), status
    key = json.loads((results / "key.json").read_text())
    assert key["done"] and [r["impl"] for r in key["rows"]] == KEY_ROWS
    assert not any("error" in r for r in key["rows"])
    assert all(r["vae_guard"]["exercised"] for r in key["rows"][:2])  # the fp16 rows' VAE overflow guard
    fid = key["rows"][-1]["cyclediff fp16 + CUDA graphs"]
    assert fid["finite"] and fid["psnr_db"] > 35 and fid["latent_rel_err"] < 0.05
    assert key["targets"]["psnr_db"]["met"]
    log = (results / "gpu_check.log").read_text()
    assert "error" not in log.split("START pytest")[1].split("END pytest")[0].lower()  # every GPU test file collected


def test_gpu_key_writes_each_row_as_it_goes_and_survives_a_failed_row(tmp_path, monkeypatch):
    import gpu_key

    from cyclediff.export.pipeline import export

    folder = tmp_path / "e"
    export("tiny", folder, quiet=True, torch_only=True)
    out = tmp_path / "key.json"
    seen = []
    real = gpu_key.cyclediff_row

    def row(label, *args, **kwargs):
        if os.path.exists(out):
            seen.append([r["impl"] for r in json.loads(out.read_text())["rows"]])
        if label == "cyclediff fp16 eager":
            raise RuntimeError("boom")
        return real(label, *args, **kwargs)

    monkeypatch.setattr(gpu_key, "cyclediff_row", row)
    rc = gpu_key.main(["--engine", str(folder), "--json", str(out), "--device", "cpu", "--steps", "3", "--repeat", "1"])
    assert rc == 1  # a failed row fails the run, after the others ran
    assert seen == [[], ["cyclediff fp16 + CUDA graphs"], ["cyclediff fp16 + CUDA graphs", "cyclediff fp16 eager",
                                                           "diffusers fp16 eager"]]
    rows = json.loads(out.read_text())["rows"]
    assert rows[1] == {"impl": "cyclediff fp16 eager", "error": "RuntimeError: boom"}
    assert [r["impl"] for r in rows] == KEY_ROWS


def test_gpu_key_refuses_a_folder_without_an_export_unless_asked_to_make_one(tmp_path):
    import gpu_key

    with pytest.raises(SystemExit, match="holds no export; pass --arch"):
        gpu_key.main(["--engine", str(tmp_path / "none"), "--json", str(tmp_path / "k.json"), "--device", "cpu"])
