"""The one contact-sheet renderer (runtime/grid.py): `cyclediff-run --grid` and the method CLIs pass one-line
captions, `cyclediff-eval` passes labels of several lines and a title; the layout of each, pixel by pixel."""
from __future__ import annotations

import importlib.util

import numpy as np
import PIL.Image
import pytest

from cyclediff.runtime.grid import BACKGROUND, CAPTION_H, LINE, MIN_TILE, PAD, contact_sheet


def _tiles(n: int, side: int = 32) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(0)
    return [PIL.Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(n)]


def _ink_rows(sheet: PIL.Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    """Indices (relative to box's top) of the rows in box holding any non-background pixel."""
    area = np.asarray(sheet.crop(box)).astype(int)
    return np.flatnonzero((area != np.array(BACKGROUND)).any(axis=(1, 2)))


def test_one_line_captions_keep_the_run_cli_layout():
    tiles = _tiles(3)
    sheet = contact_sheet(tiles, ["a house (input)", "a castle", "a castle in winter, " * 20])
    side = MIN_TILE  # 32 px tiles are upscaled by an integer factor to 192
    assert sheet.size == (3 * (side + PAD) + PAD, side + CAPTION_H + 2 * PAD)
    for k, tile in enumerate(tiles):  # each tile, nearest-neighbour upscaled, at its place
        x = PAD + k * (side + PAD)
        got = sheet.crop((x, PAD, x + side, PAD + side))
        assert got.tobytes() == tile.resize((side, side), PIL.Image.NEAREST).tobytes()
        assert len(_ink_rows(sheet, (x, PAD + side, x + side, PAD + side + CAPTION_H))) > 0  # a caption is drawn
    # An over-long prompt is shortened to fit: the strip stays one line high.
    assert contact_sheet(tiles[:1], ["word " * 200]).height == side + CAPTION_H + 2 * PAD


def test_labels_of_several_lines_are_wrapped_never_cut():
    tiles = _tiles(2)
    label = ["best by dCLIP", "g=2 s=0.8 eta=0.1 sg=1 t=1", "dCLIP 0.123 CLIP 10.1", "PSNR 11.0 SSIM 0.045"]
    four = contact_sheet(tiles, [["input"], label])
    assert four.height == MIN_TILE + CAPTION_H + 3 * LINE + 2 * PAD  # the tallest label sets the strip
    long = contact_sheet(tiles, [["input"], ["x" * 200]])  # no space to wrap at: cut into lines instead
    assert long.height > MIN_TILE + CAPTION_H + 2 * PAD
    x = PAD + MIN_TILE + PAD
    assert _ink_rows(four, (x, PAD + MIN_TILE, x + MIN_TILE, four.height)).max() > 3 * LINE  # the 4th line drawn


def test_a_title_goes_above_the_tiles():
    tiles = _tiles(2)
    plain = contact_sheet(tiles, ["a", "b"])
    titled = contact_sheet(tiles, ["a", "b"], title="a house -> a castle")
    top = LINE + PAD
    assert titled.size == (plain.width, plain.height + top)
    assert titled.crop((0, top, titled.width, titled.height)).tobytes() == plain.tobytes()  # the rest, moved down
    assert len(_ink_rows(titled, (0, 0, titled.width, top))) > 0


def test_bad_calls_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least one image"):
        contact_sheet([])
    with pytest.raises(ValueError, match="1 captions for 2 images"):
        contact_sheet(_tiles(2), ["only one"])


def test_the_evaluation_draws_through_the_one_renderer():
    from cyclediff.eval import report

    assert importlib.util.find_spec("cyclediff.eval.sheets") is None  # the second renderer is gone
    assert report.contact_sheet is contact_sheet
