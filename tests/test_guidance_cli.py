"""`cyclediff-guide` offline, in a real process: `--clip tiny` is the built-in CLIP that `cyclediff-eval --clip
tiny` uses (the same folder), so a CLIP-guided run needs no download."""
from __future__ import annotations

import os
import subprocess
import sys

import PIL.Image

from cyclediff.runtime.methods.guidance.clip_loader import resolve


def test_clip_tiny_is_evals_builtin_clip():
    from cyclediff.eval.clip_model import resolve_clip

    assert resolve("tiny") == resolve_clip("tiny")
    assert (resolve("tiny") / "config.json").is_file()


def test_guide_runs_offline_with_the_tiny_clip(exports, tmp_path):
    out = tmp_path / "guided.png"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_CACHE": str(tmp_path / "empty-hub-cache")}  # nothing cached: only the built-in CLIP can load
    done = subprocess.run(
        [sys.executable, "-m", "cyclediff.runtime.methods.guidance.cli", "--engine", str(exports("tiny")),
         "--prompt", "a cat", "--clip-text", "a dog", "--clip", "tiny", "--clip-augment", "1", "--steps", "1",
         "--guide-steps", "1", "--decode-steps", "2", "--seed", "0", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    with PIL.Image.open(out) as image:
        assert image.size == (32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guided.png"]  # no temp files left


def test_guide_without_the_clip_says_tiny_is_there(exports, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "cyclediff.runtime.methods.guidance.cli", "--engine", str(exports("tiny")),
         "--prompt", "a cat", "--clip-text", "a dog", "--clip", str(tmp_path / "no-clip"), "--out",
         str(tmp_path / "out" / "g.png"), "--quiet"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 2 and "hf download" in done.stderr and "'tiny'" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()
