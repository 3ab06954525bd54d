"""Contact sheet: a row of images (the input, then each edit or candidate), a caption under each tile, and an
optional title above. The one renderer of the project: `cyclediff-run --grid`, the method CLIs' sheets and
`cyclediff-eval`'s per-input sheets all draw through `contact_sheet`."""
from __future__ import annotations

from collections.abc import Sequence

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

MIN_TILE = 192  # tiny checkpoints make 32 px images: upscale so the sheet (and its captions) can be read
CAPTION_H = 18  # the strip under the tiles for one caption line
LINE = 12  # px per further caption or title line (PIL's default font is ~11 px high)
PAD = 4
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)

Caption = str | Sequence[str]


def contact_sheet(tiles: list[PIL.Image.Image], captions: Sequence[Caption] | None = None, *,
                  title: str | None = None) -> PIL.Image.Image:
    """One row of equally sized tiles (resized to the first tile's size, at least MIN_TILE on its short side).

    captions: one per tile, either a str (one line, shortened with an ellipsis to fit: a prompt) or a list of
    lines (each wrapped to the tile width, nothing cut: a label such as a candidate's settings and metrics).
    title: a line above the row, wrapped to the sheet's width. Without a title and with str captions the sheet
    is exactly the one-line-caption sheet this function always drew."""
    if not tiles:
        raise ValueError("contact_sheet needs at least one image")
    captions = list(captions) if captions is not None else [""] * len(tiles)
    if len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} images")
    w, h = _tile_size(tiles[0])
    width = len(tiles) * (w + PAD) + PAD
    font = PIL.ImageFont.load_default()
    measure = PIL.ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
    lines = [_caption_lines(measure, font, caption, w - 4) for caption in captions]
    head = _wrap(measure, font, title, width - 2 * PAD) if title else []
    top = len(head) * LINE + PAD if head else 0  # the title's rows above the tiles
    strip = CAPTION_H + (max(len(tile_lines) for tile_lines in lines) - 1) * LINE
    sheet = PIL.Image.new("RGB", (width, top + h + strip + 2 * PAD), BACKGROUND)
    draw = PIL.ImageDraw.Draw(sheet)
    for i, line in enumerate(head):
        draw.text((PAD + 2, PAD + i * LINE), line, fill=INK, font=font)
    for k, (tile, tile_lines) in enumerate(zip(tiles, lines)):
        x = PAD + k * (w + PAD)
        sheet.paste(_fit(tile, w, h), (x, top + PAD))
        for i, line in enumerate(tile_lines):
            draw.text((x + 2, top + PAD + h + 3 + i * LINE), line, fill=INK, font=font)
    return sheet


def _tile_size(first: PIL.Image.Image) -> tuple[int, int]:
    scale = max(1, -(-MIN_TILE // min(first.size)))  # integer upscale: keeps small images' pixels crisp
    return first.width * scale, first.height * scale


def _fit(tile: PIL.Image.Image, w: int, h: int) -> PIL.Image.Image:
    tile = tile.convert("RGB")
    if tile.size == (w, h):
        return tile
    # Upscaling shows pixels as they are (NEAREST); downscaling an input photo wants a smooth filter.
    resample = PIL.Image.NEAREST if tile.width <= w else PIL.Image.LANCZOS
    return tile.resize((w, h), resample=resample)


def _caption_lines(draw: PIL.ImageDraw.ImageDraw, font, caption: Caption, width: int) -> list[str]:
    if isinstance(caption, str):
        return [_clip(draw, font, caption, width)]
    return [part for line in caption for part in _wrap(draw, font, line, width)] or [""]


def _clip(draw: PIL.ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """Shorten text with an ellipsis until it fits the tile width."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def _wrap(draw: PIL.ImageDraw.ImageDraw, font, text: str, width: int) -> list[str]:
    """Greedy word wrap to `width` px (at least one line, maybe empty)."""
    lines: list[str] = []
    for piece in (p for word in text.split() for p in _split_word(draw, font, word, width)):
        if lines and draw.textlength(f"{lines[-1]} {piece}", font=font) <= width:
            lines[-1] += f" {piece}"
        else:
            lines.append(piece)
    return lines or [""]


def _split_word(draw: PIL.ImageDraw.ImageDraw, font, word: str, width: int) -> list[str]:
    """A word wider than a line, cut where it overflows (a long setting label has no spaces to wrap at)."""
    parts = []
    while len(word) > 1 and draw.textlength(word, font=font) > width:
        cut = len(word) - 1
        while cut > 1 and draw.textlength(word[:cut], font=font) > width:
            cut -= 1
        parts.append(word[:cut])
        word = word[cut:]
    return [*parts, word]
