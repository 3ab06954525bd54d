"""The protocol's metric names and whether higher is better (best-of-N selection and the tables read this).
No torch here: `cyclediff-eval --help` lists them."""
from __future__ import annotations

HIGHER_IS_BETTER = {"clip": True, "dclip": True, "psnr": True, "ssim": True, "l2": False}
METRICS = tuple(HIGHER_IS_BETTER)
