"""cyclediff: an inference engine for zero-shot text-guided image editing with Stable Diffusion v1.x (CycleDiffusion).

    engine = cyclediff.Engine.load("exports/tiny")
    images = engine.edit(prompt="a cat", source_prompt="a dog", image=img).images
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# OpenMP threads that spin while waiting make torch 10-100x slower when another process uses the cores
# (measured: a tiny edit 0.1 s alone, 0.7-15 s beside a busy process). It must be set before torch is imported,
# which importing cyclediff (or its CLIs) first ensures; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
# Public name -> defining module. Resolved on first use so that `cyclediff-run --help` and other light
# imports of cyclediff.* do not pay for importing torch.
_EXPORTS = {
    "Engine": "cyclediff.runtime.engine",
    "EditOutput": "cyclediff.runtime.engine",
    "EditParams": "cyclediff.runtime.core.config",
    "EngineConfig": "cyclediff.runtime.core.config",
    "PRESETS": "cyclediff.runtime.core.config",
    "LatentCode": "cyclediff.runtime.core.latent_code",
    "LatentCodeError": "cyclediff.runtime.core.latent_code",
    "InversionCode": "cyclediff.runtime.methods.pix2pix_zero.code",
    "EditDirection": "cyclediff.runtime.methods.pix2pix_zero.directions",
    "cancel_scope": "cyclediff.runtime.core.cancel",
    "Cancelled": "cyclediff.runtime.core.cancel",
    "InvalidArgument": "cyclediff.runtime.core.checks",
    "EditRequest": "cyclediff.runtime.core.requests",
    "EncodeRequest": "cyclediff.runtime.core.requests",
    "DecodeRequest": "cyclediff.runtime.core.requests",
    "InvertRequest": "cyclediff.runtime.methods.pix2pix_zero.requests",
    "Pix2PixZeroRequest": "cyclediff.runtime.methods.pix2pix_zero.requests",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cyclediff' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})  # a set: a name already resolved is in both
