"""cyclediff-eval on the paper's own test-set format (ChenWu98/cycle-diffusion data/translate-text.json) and its
grid preset; real images of every mode and size prepared as the paper's preprocessing, not rejected."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from cyclediff.eval.cli import build_parser, config_from_args
from cyclediff.eval.grid import PRESETS
from cyclediff.eval.triplets import TripletError, load_triplets, read_image


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A folder laid out as the paper's repository: data/translate-text.json, images under data/."""
    root = tmp_path_factory.mktemp("cycle-diffusion")
    (root / "data" / "imgs").mkdir(parents=True)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    PIL.Image.fromarray(rgba, "RGBA").save(root / "data/imgs/rgba.png")
    PIL.Image.new("P", (33, 33), 3).save(root / "data/imgs/palette.png")
    gray16 = (np.linspace(0, 65535, 37 * 53).reshape(53, 37)).astype(np.uint16)
    PIL.Image.fromarray(gray16).save(root / "data/imgs/odd16.png")  # 37x53, 16-bit grayscale
    entries = [{"encode_text": "a red square", "decode_text": "a blue square", "img_path": "./data/imgs/rgba.png"},
               {"encode_text": "a grey tile", "decode_text": "a gold tile", "img_path": "./data/imgs/palette.png"},
               {"encode_text": "a gradient", "decode_text": "a sunset", "img_path": "./data/imgs/odd16.png"}]
    (root / "data" / "translate-text.json").write_text(json.dumps(entries, indent=4))
    return root


def test_paper_format_reads_with_paths_from_the_repository_root(repo):
    triplets = load_triplets(repo / "data" / "translate-text.json")
    assert [(t.source_prompt, t.target_prompt, t.image.name) for t in triplets] == [
        ("a red square", "a blue square", "rgba.png"), ("a grey tile", "a gold tile", "palette.png"),
        ("a gradient", "a sunset", "odd16.png")]
    assert len({t.id for t in triplets}) == 3


def test_every_mode_and_size_is_prepared_as_the_paper_does(repo):
    rgba, palette, odd = (read_image(t, 32) for t in load_triplets(repo / "data" / "translate-text.json"))
    assert all(i.mode == "RGB" and i.size == (32, 32) for i in (rgba, palette, odd))
    assert np.asarray(rgba)[..., 0].min() == 200  # alpha dropped, stored colour kept (PIL's RGBA -> RGB)
    column = np.asarray(odd)[:, 16, 0]
    assert column[0] < 60 and column[-1] > 195  # 16 bits scaled to 8, not clipped to white; cropped centre
    wide = PIL.Image.fromarray(np.tile((np.arange(64, dtype=np.uint8) * 4)[None, :, None], (32, 1, 3)))
    exif = wide.getexif()
    exif[0x0112] = 6  # EXIF orientation: shown rotated by 90 degrees, so the left-right ramp runs top-bottom
    wide.save(repo / "rotated.png", exif=exif)
    [t] = load_triplets(_paper_file(repo, "rotated.png"))
    shown = np.asarray(read_image(t, 32), dtype=float)[..., 0]
    assert shown[:, 16].std() > 10 * max(shown[16, :].std(), 1)


def _paper_file(root: Path, image: str) -> Path:
    path = root / "data" / f"one-{image}.json"
    path.write_text(json.dumps([{"encode_text": "a", "decode_text": "b", "img_path": image}]))
    return path


def test_bad_paper_entries_are_all_reported(repo, tmp_path):
    bad = tmp_path / "data" / "bad.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps([{"encode_text": "a", "img_path": "x.png"},
                               {"encode_text": "a", "decode_text": "b", "img_path": "./data/nope.png"}]))
    with pytest.raises(TripletError) as err:
        load_triplets(bad)
    text = str(err.value)
    assert "bad.json:1: missing or empty 'decode_text'" in text
    assert "bad.json:2: image ./data/nope.png: no such file (looked for" in text and str(tmp_path) in text
    with pytest.raises(TripletError, match="a list of objects"):
        (tmp_path / "obj.json").write_text("{}")
        load_triplets(tmp_path / "obj.json")


def test_paper_translate_preset_is_the_papers_grid():
    grid = PRESETS["paper-translate"]
    assert grid.guidance_scales == (1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
    assert grid.strengths == (0.85, 0.8, 0.75, 0.7, 0.6, 0.5)  # skip_steps 15..50 of 100
    assert (grid.etas, grid.trials, grid.steps, dict(grid.options)) == ((0.1,), 15, 100,
                                                                       {"source_guidance_scale": (1.0,)})
    assert grid.size() == 6 * 6 * 15
    args = build_parser().parse_args(["--engine", "e", "--triplets", "t.json", "--out", "o", "--preset",
                                      "paper-translate", "--trials", "2", "--strength", "0.5"])
    cfg = config_from_args(args)
    assert (cfg.grid.trials, cfg.grid.strengths, cfg.grid.guidance_scales) == (2, (0.5,), grid.guidance_scales)


def test_tiny_run_over_the_paper_format(exports, repo, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "cyclediff.eval.cli", "--engine", str(exports("tiny")),
                           "--triplets", str(repo / "data" / "translate-text.json"), "--out", str(out),
                           "--clip", "tiny", "--steps", "4", "--guidance-scale", "1,2", "--quiet"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    with (out / "candidates.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 and {r["triplet"] for r in rows} == {t.id for t in load_triplets(
        repo / "data" / "translate-text.json")}
