"""Contact sheets: per input, the input image, the selected candidate and the next-best ones, labelled."""
from __future__ import annotations

import textwrap

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

TILE = 160  # px: small images (the tiny checkpoint's 32 px) are enlarged to this, nearest-neighbour
LINE = 12  # px per label line (PIL's default bitmap font is ~11 px high)
CHARS = 26  # label characters per line at TILE px


def contact_sheet(title: str, tiles: list[tuple[PIL.Image.Image, list[str]]]) -> PIL.Image.Image:
    """tiles: (image, label lines) left to right under a title line. Returns one RGB image."""
    font = PIL.ImageFont.load_default()
    side = max(TILE, max(img.width for img, _ in tiles))
    labels = [_wrap(lines) for _, lines in tiles]
    title_lines = _wrap([title], chars=CHARS * len(tiles))
    top = LINE * len(title_lines) + 8
    label_h = LINE * max(len(lines) for lines in labels) + 8
    sheet = PIL.Image.new("RGB", (side * len(tiles) + 4 * (len(tiles) + 1), top + side + label_h), "white")
    draw = PIL.ImageDraw.Draw(sheet)
    for i, line in enumerate(title_lines):
        draw.text((4, 4 + i * LINE), line, fill="black", font=font)
    for k, ((img, _), lines) in enumerate(zip(tiles, labels)):
        x = 4 + k * (side + 4)
        sheet.paste(_fit(img, side), (x, top))
        for i, line in enumerate(lines):
            draw.text((x, top + side + 4 + i * LINE), line, fill="black", font=font)
    return sheet


def candidate_label(rank: str, row: dict, setting: str) -> list[str]:
    """The lines under a candidate: its rank, setting and trial, and its metrics."""
    return [rank, f"{setting} t={row['trial']}", f"dCLIP {float(row['dclip']):.3f} CLIP {float(row['clip']):.1f}",
            f"PSNR {float(row['psnr']):.1f} SSIM {float(row['ssim']):.3f}"]


def _fit(img: PIL.Image.Image, side: int) -> PIL.Image.Image:
    if img.size == (side, side):
        return img.convert("RGB")
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    method = PIL.Image.Resampling.NEAREST if scale >= 2 else PIL.Image.Resampling.LANCZOS
    return img.convert("RGB").resize(size, method)


def _wrap(lines: list[str], chars: int = CHARS) -> list[str]:
    return [part for line in lines for part in (textwrap.wrap(line, chars) or [""])]
