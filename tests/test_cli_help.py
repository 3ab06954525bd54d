"""Every CLI's --help answers without importing torch (importing it takes ~1 s; help must be instant)."""
from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from cyclediff.{module} import main
try:
    main(["--help"])
except SystemExit as stop:
    assert stop.code in (0, None), stop.code
heavy = sorted(m for m in ("torch", "onnxruntime", "diffusers", "transformers", "ray") if m in sys.modules)
print("HEAVY", ",".join(heavy))
"""


@pytest.mark.parametrize("module", ["runtime.cli", "export.cli", "eval.cli", "serve.cli"])
def test_help_imports_no_heavy_library(module):
    if module == "serve.cli":
        pytest.importorskip("fastapi", reason="needs the serve extra: pip install '.[serve]'")
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout
    heavy = out.stdout.split("HEAVY", 1)[1].strip()
    assert heavy == "", f"`{module} --help` imported {heavy}"
