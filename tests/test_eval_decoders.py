"""cyclediff-eval's --decoder-engine axis: every code decoded by each export (translation between two models)."""
from __future__ import annotations

import csv
from pathlib import Path

import PIL.Image

from cyclediff.eval.cli import main

GRID = ["--guidance-scale", "1,2", "--strength", "0.8", "--eta", "0.1", "--trials", "1", "--steps", "4",
        "--clip", "tiny", "--quiet"]


def _triplets(folder: Path) -> Path:
    PIL.Image.new("RGB", (32, 32), (200, 60, 40)).save(folder / "red.png")
    (folder / "t.csv").write_text("image,source_prompt,target_prompt\nred.png,a red house,a blue house\n")
    return folder / "t.csv"


def _rows(out: Path) -> list[dict]:
    with (out / "candidates.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_decoder_axis_decodes_each_code_with_each_export(exports, finetune, tmp_path, capsys):
    triplets = _triplets(tmp_path)
    base = ["--engine", str(exports("tiny")), "--triplets", str(triplets), *GRID]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    axis = ["--decoder-engine", str(exports("tiny")), "--decoder-engine", str(finetune)]
    assert main([*base, "--out", str(tmp_path / "axis"), *axis]) == 0
    plain, rows = _rows(tmp_path / "plain"), _rows(tmp_path / "axis")
    names = [exports("tiny").name, finetune.name]
    assert [r["decoder"] for r in rows] == [names[0]] * 2 + [names[1]] * 2  # 2 exports x 2 guidance scales
    assert "decoder" not in plain[0]
    for mine, same in zip(rows[:2], plain):  # --engine as its own decoder: the edit without the axis
        assert (mine["guidance_scale"], mine["psnr"], mine["clip"]) == (same["guidance_scale"], same["psnr"],
                                                                          same["clip"])
    assert rows[2]["psnr"] != rows[0]["psnr"] and f"dec={names[1]}" in rows[2]["setting"]
    capsys.readouterr()
    bad = ["--decoder-engine", str(exports("tiny-trailing"))]
    assert main([*base, "--out", str(tmp_path / "bad"), *bad]) == 2
    assert "cannot decode --engine's codes" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "bad"), *bad[:1], str(exports("tiny")), "--method",
                 "pix2pix-zero"]) == 2
    assert "does not apply to --method pix2pix-zero" in capsys.readouterr().err
