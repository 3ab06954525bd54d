"""`cyclediff-eval --method pix2pix-zero` on the tiny checkpoint: the grid's candidates, each one the same picture as
the engine's invert + pix2pix_zero with that trial's seed, and the strength axis refused."""
from __future__ import annotations

import csv
import json

import PIL.Image
import pytest
import torch

from cyclediff.eval.cli import main

GRID = ["--method", "pix2pix-zero", "--backend", "torch", "--guidance-scale", "1,2", "--eta", "0",
        "--option", "cross_attention_guidance_amount=0,0.1", "--trials", "2", "--steps", "3", "--clip", "tiny",
        "--sheet-size", "2", "--quiet"]


@pytest.fixture(scope="module")
def run(exports, tmp_path_factory):
    engine = exports("tiny")
    folder = tmp_path_factory.mktemp("eval-p2p")
    side = json.loads((engine / "manifest.json").read_text())["sample_size"]
    PIL.Image.new("RGB", (side, side), (200, 60, 40)).save(folder / "red.png")
    (folder / "t.csv").write_text("image,source_prompt,target_prompt\nred.png,a red house,a blue house\n")
    out = folder / "out"
    assert main(["--engine", str(engine), "--triplets", str(folder / "t.csv"), "--out", str(out), *GRID]) == 0
    with (out / "candidates.csv").open(newline="") as f:
        return engine, folder / "t.csv", list(csv.DictReader(f))


def test_every_candidate_of_the_grid(run):
    _, _, rows = run
    assert sorted(r["candidate"] for r in rows) == sorted(
        f"g{g}_xa{a}_s1_eta0_t{t}" for g in (1, 2) for a in (0, 0.1) for t in (0, 1))
    assert {r["method"] for r in rows} == {"pix2pix-zero"} and {r["strength"] for r in rows} == {"1.0"}


def test_candidate_is_the_engines_edit_with_its_trial_seed(run):
    import cyclediff
    from cyclediff.eval import metrics
    from cyclediff.eval.sweep import to_tensor
    from cyclediff.eval.triplets import load_triplets, read_image

    engine_dir, triplets, rows = run
    engine = cyclediff.Engine.load(engine_dir, backend="torch", progress=False)
    triplet = load_triplets(triplets)[0]
    image = read_image(triplet, engine.manifest.sample_size)
    code = engine.invert("a red house", image, num_inference_steps=3, output_type=None,
                         generator=torch.Generator().manual_seed(1))
    d = engine.edit_direction(["a red house"], ["a blue house"])
    edit = engine.pix2pix_zero("a red house", d.source_embeds, d.target_embeds, num_inference_steps=3,
                               guidance_scale=2.0, eta=0.0, generator=torch.Generator().manual_seed(1), latents=code,
                               cross_attention_guidance_amount=0.1, output_type="pt").images
    quantized = (edit.clamp(0, 1) * 255).round() / 255
    row = next(r for r in rows if r["candidate"] == "g2_xa0.1_s1_eta0_t1")
    assert float(row["psnr"]) == pytest.approx(metrics.psnr(quantized, to_tensor(image)).item(), abs=1e-3)
    other = next(r for r in rows if r["candidate"] == "g2_xa0_s1_eta0_t1")
    assert float(other["psnr"]) != float(row["psnr"])  # the amount reaches the edit


def test_strength_axis_is_refused(exports, tmp_path, capsys):
    (tmp_path / "t.csv").write_text("image,source_prompt,target_prompt\nsample,a house,a barn\n")
    code = main(["--engine", str(exports("tiny")), "--triplets", str(tmp_path / "t.csv"), "--out",
                 str(tmp_path / "out"), *GRID, "--strength", "0.6,0.8"])
    assert code == 2 and "--strength does not apply to --method pix2pix-zero" in capsys.readouterr().err
    assert not (tmp_path / "out" / "candidates.csv").exists()


def test_every_eta_edits_from_the_same_inversions():
    """eta is an encoding axis (a table column) but not an input of the inversion: one inversion per trial seed
    serves every eta of an input; the next input is inverted afresh."""
    from types import SimpleNamespace

    from cyclediff.eval.grid import SweepGrid
    from cyclediff.eval.methods import Pix2PixZeroMethod

    calls = []

    class FakeEngine:
        def edit_direction(self, source, target):
            return SimpleNamespace(source_embeds=None, target_embeds=None)

        def invert(self, prompt, image, **kwargs):
            calls.append((prompt, kwargs["generator"].initial_seed()))
            return object()

        def pix2pix_zero(self, *args, **kwargs):
            return SimpleNamespace(images=torch.zeros(1, 3, 2, 2))

    grid = SweepGrid(guidance_scales=(1.0,), etas=(0.0, 0.5), trials=2, steps=3, method="pix2pix-zero")
    method, engine = Pix2PixZeroMethod(), FakeEngine()
    first, second = PIL.Image.new("RGB", (2, 2)), PIL.Image.new("RGB", (2, 2))
    for image in (first, second):
        for enc in method.encodings(grid):
            method.run(engine, image, "a house", "a barn", enc, method.decodings(grid), grid)
    assert calls == [("a house", 0), ("a house", 1)] * 2  # 2 seeds x 2 inputs, not x 2 etas
