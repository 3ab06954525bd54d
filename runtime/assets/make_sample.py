"""Regenerate sample.png: a deterministic 512x512 scene (sky, sun, hills, house, tree) drawn with numpy + Pillow.

    python runtime/assets/make_sample.py [OUT]     # default: next to this script
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

SIZE = 512  # SD v1.x's native side, so the real checkpoints take it without resizing


def _sky(size: int) -> np.ndarray:
    """Vertical gradient from deep blue at the top to a pale horizon."""
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    top, horizon = np.array([40, 90, 180], np.float32), np.array([190, 220, 245], np.float32)
    return np.broadcast_to(top + (horizon - top) * t, (size, size, 3)).copy()


def _hills(canvas: np.ndarray) -> None:
    """Two rolling sine-wave hills; the nearer one darker, drawn last so it overlaps."""
    size = canvas.shape[0]
    x = np.arange(size, dtype=np.float32)
    y = np.arange(size, dtype=np.float32)[:, None]
    for base, amp, freq, phase, colour in ((0.62, 0.05, 2.1, 0.3, (110, 170, 90)), (0.72, 0.04, 3.3, 1.7, (70, 135, 60))):
        ridge = size * (base + amp * np.sin(freq * np.pi * x / size + phase))
        shade = np.clip((y - ridge) / (0.4 * size), 0, 1)[..., None]  # darker toward the bottom: cheap depth
        mask = (y >= ridge)[..., None]
        hill = np.array(colour, np.float32) * (1.0 - 0.35 * shade)
        canvas[:] = np.where(mask, hill, canvas)


def _shapes(image: PIL.Image.Image) -> None:
    """Sun, house (walls, roof, door, window) and a tree, as flat Pillow polygons."""
    s = image.width / 512  # all coordinates are designed on a 512 grid
    d = PIL.ImageDraw.Draw(image)

    def box(*v: float) -> list[int]:
        return [round(c * s) for c in v]

    d.ellipse(box(380, 50, 460, 130), fill=(255, 214, 80))
    d.rectangle(box(170, 290, 330, 400), fill=(215, 180, 140))
    d.polygon(box(155, 292, 250, 215, 345, 292), fill=(165, 55, 45))
    d.rectangle(box(230, 335, 270, 400), fill=(95, 60, 40))
    d.rectangle(box(185, 315, 215, 345), fill=(150, 200, 235))
    d.rectangle(box(285, 315, 315, 345), fill=(150, 200, 235))
    d.rectangle(box(405, 330, 420, 410), fill=(100, 70, 45))
    d.ellipse(box(370, 260, 455, 350), fill=(45, 110, 50))


def render(size: int = SIZE) -> PIL.Image.Image:
    canvas = _sky(size)
    _hills(canvas)
    image = PIL.Image.fromarray(np.round(canvas).astype(np.uint8), "RGB")
    _shapes(image)
    return image


def png_bytes(image: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sample.png")
    out.write_bytes(png_bytes(render()))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
