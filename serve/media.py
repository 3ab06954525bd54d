"""Images and codes in and out of HTTP bodies: upload bytes -> checked RGB picture, results -> PNG / .npy bytes."""
from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

import numpy as np
import PIL.Image

from cyclediff.serve.config import Limits
from cyclediff.serve.errors import RequestError


def from_base64(field: str, value: object) -> bytes:
    """Base64 text (a `data:...;base64,` prefix is allowed) -> bytes."""
    if not isinstance(value, str):
        raise RequestError(422, field, f"{field} must be a base64 string in JSON (or a file in a multipart "
                                       f"upload), got {type(value).__name__}")
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, field, f"{field} is not valid base64; encode the file's bytes with base64 "
                                       "(e.g. `base64 -w0 house.png`)") from None


def read_image(data: bytes, limits: Limits, side_multiple: int) -> PIL.Image.Image:
    """Decode an upload; sides are checked from the header before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(io.BytesIO(data))
            w, h = image.size
            if max(w, h) > limits.max_side:
                raise RequestError(413, "image", f"image is {w}x{h}, larger than the service's limit of "
                                                 f"{limits.max_side} pixels per side; downscale it")
            image.load()
    except RequestError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many types for corrupt or unknown files
        raise RequestError(400, "image", f"image could not be decoded: received {describe(data)}{_reason(err)}; "
                                         "send a PNG, JPEG or WebP file") from None
    _check_sides(w, h, side_multiple)
    return image if image.mode == "RGB" else image.convert("RGB")


# What an upload that is not a picture PIL reads may be, by its first bytes.
SIGNATURES = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"%PDF", "PDF"),
              (b"PK\x03\x04", "ZIP"))


def describe(data: bytes) -> str:
    """What an upload holds, for an error message: "7 bytes of text: 'a house'", "3000 bytes of PNG data"."""
    if not data:
        return "an empty file (0 bytes)"
    size = f"{len(data)} byte{'' if len(data) == 1 else 's'}"
    kinds = [what for magic, what in SIGNATURES if data.startswith(magic)]
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        kinds.append("WebP")
    if kinds:
        return f"{size} of {kinds[0]} data"
    text = _text(data[:4096])
    if text is not None:
        head = " ".join(text.split())
        return f"{size} of text: {head[:40]!r}{'...' if len(head) > 40 else ''}"
    return f"{size} of an unknown format (starting {data[:8].hex(' ')})"


def _text(head: bytes) -> str | None:
    """The bytes as text, when they are printable UTF-8 (the sample may cut a character at its end)."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:
            return None
        text = head[:err.start].decode("utf-8")
    return text if all(c.isprintable() or c.isspace() for c in text) else None


def _reason(err: Exception) -> str:
    """PIL's reason, when it says more than "cannot identify image file <_io.BytesIO object at 0x...>"."""
    if isinstance(err, PIL.UnidentifiedImageError):
        return ""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(err)).strip()
    return f" ({type(err).__name__}: {text})" if text else f" ({type(err).__name__})"


def _check_sides(w: int, h: int, m: int) -> None:
    if w % m or h % m:
        fit = f"{max(m, w // m * m)}x{max(m, h // m * m)}"
        raise RequestError(422, "image", f"image is {w}x{h}; both sides must be multiples of {m} pixels for this "
                                         f"engine; resize or crop it (e.g. to {fit})")


def png_bytes(image: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """(H, W, 3) float32 in [0, 1], as `np.save` writes it (read back with np.load(io.BytesIO(data)))."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32))
    return buf.getvalue()


def to_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
