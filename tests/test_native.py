"""libcyclediff's C ABI seen from Python through ctypes (the native build itself is tested by its ctest suite)."""
from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path(os.environ.get("CYCLEDIFF_NATIVE_BUILD", ROOT / "build" / "native"))
LIB = BUILD / "libcyclediff.so"

pytestmark = pytest.mark.skipif(not LIB.is_file(), reason=f"no native build at {BUILD} (run bash .ci/native.sh)")

OK, NOT_AN_EXPORT, SCHEMA_VERSION = 0, 4, 5


class Params(ctypes.Structure):
    _fields_ = [("strength", ctypes.c_double), ("num_inference_steps", ctypes.c_int32),
                ("guidance_scale", ctypes.c_double), ("source_guidance_scale", ctypes.c_double),
                ("eta", ctypes.c_double), ("seed", ctypes.c_uint64), ("num_images_per_prompt", ctypes.c_int32),
                ("clip_skip", ctypes.c_int32)]


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    cdll = ctypes.CDLL(str(LIB))
    cdll.cyclediff_params_default.restype = Params
    cdll.cyclediff_last_error.restype = ctypes.c_char_p
    cdll.cyclediff_status_name.restype = ctypes.c_char_p
    cdll.cyclediff_version.restype = ctypes.c_char_p
    cdll.cyclediff_engine_create.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
    return cdll


def test_params_default_match_python_edit(lib):
    from cyclediff.runtime.core.config import EditParams

    p, py = lib.cyclediff_params_default(), EditParams()
    assert (p.strength, p.num_inference_steps, p.guidance_scale, p.source_guidance_scale, p.eta) == (
        py.strength, py.num_inference_steps, py.guidance_scale, py.source_guidance_scale, py.eta)
    assert (p.seed, p.num_images_per_prompt, p.clip_skip) == (0, 1, -1)
    assert lib.cyclediff_version().decode() == "0.1.0"


def test_manifest_errors_have_codes_and_hints(lib, tmp_path):
    engine = ctypes.c_void_p()
    assert lib.cyclediff_engine_create(str(tmp_path).encode(), None, ctypes.byref(engine)) == NOT_AN_EXPORT
    assert b"cyclediff-export" in lib.cyclediff_last_error() and not engine.value
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    assert lib.cyclediff_engine_create(str(tmp_path).encode(), None, ctypes.byref(engine)) == SCHEMA_VERSION
    assert b"re-run `cyclediff-export`" in lib.cyclediff_last_error()
    assert lib.cyclediff_status_name(SCHEMA_VERSION) == b"CYCLEDIFF_ERR_SCHEMA_VERSION"
