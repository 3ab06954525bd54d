"""Contact sheet: the input image, then each edit, side by side with a caption strip under each tile."""
from __future__ import annotations

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

MIN_TILE = 192  # tiny checkpoints make 32 px images: upscale so the sheet (and its captions) can be read
CAPTION_H = 18
PAD = 4
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def contact_sheet(tiles: list[PIL.Image.Image], captions: list[str] | None = None) -> PIL.Image.Image:
    """One row of equally sized tiles (resized to the first tile's size, at least MIN_TILE on its short side)."""
    if not tiles:
        raise ValueError("contact_sheet needs at least one image")
    captions = list(captions) if captions is not None else [""] * len(tiles)
    if len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} images")
    w, h = _tile_size(tiles[0])
    sheet = PIL.Image.new("RGB", (len(tiles) * (w + PAD) + PAD, h + CAPTION_H + 2 * PAD), BACKGROUND)
    draw = PIL.ImageDraw.Draw(sheet)
    font = PIL.ImageFont.load_default()
    for i, (tile, caption) in enumerate(zip(tiles, captions)):
        x = PAD + i * (w + PAD)
        sheet.paste(_fit(tile, w, h), (x, PAD))
        draw.text((x + 2, PAD + h + 3), _clip(draw, font, caption, w - 4), fill=INK, font=font)
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


def _clip(draw: PIL.ImageDraw.ImageDraw, font, text: str, width: int) -> str:
    """Shorten text with an ellipsis until it fits the tile width."""
    text = " ".join(text.split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""
