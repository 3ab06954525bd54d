"""The C++ build's configure step: a missing dependency stops it with the apt-get line that installs every one,
and that line agrees with CI's list and the README's quick start."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _packages(text: str, pattern: str) -> list[str]:
    match = re.search(pattern, text)
    assert match, pattern
    return sorted(match.group(1).replace('"', " ").split())


def test_one_package_list_everywhere():
    cmake = _packages((ROOT / "native/cmake/require.cmake").read_text(), r'CYCLEDIFF_APT_PACKAGES "([^"]+)"')
    ci = _packages((ROOT / ".ci/native.sh").read_text(), r"need=\(([^)]+)\)")
    readme = _packages((ROOT / "README.md").read_text(), r"sudo apt-get install ([^\n]+)")
    assert cmake == ci == readme


@pytest.mark.skipif(shutil.which("cmake") is None, reason="no cmake")
def test_a_missing_dependency_prints_the_install_command(tmp_path):
    done = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(tmp_path / "build"), "-DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON",
         "-DCYCLEDIFF_WITH_TORCH=OFF", "-DCYCLEDIFF_WITH_TENSORRT=OFF", "-DCYCLEDIFF_BUILD_TESTS=OFF",
         "-DCYCLEDIFF_BUILD_EXAMPLE=OFF"], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode != 0
    text = " ".join(done.stderr.split())  # CMake wraps long messages
    assert "nlohmann_json >= 3.9 (package nlohmann-json3-dev) was not found" in text
    assert "sudo apt-get install cmake g++ ninja-build pkg-config nlohmann-json3-dev" in text
    assert "-DCYCLEDIFF_PYTHON=$(which python)" in text
