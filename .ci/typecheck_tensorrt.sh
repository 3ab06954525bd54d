#!/usr/bin/env bash
# Type-check every module that imports tensorrt against tensorrt-stubs, with no TensorRT installed.
# Run from any folder, in a venv that has the project installed: bash .ci/typecheck_tensorrt.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
STUBS_VERSION=10.13.0.35.1  # the patches below are for this release's stub files

# 1. mypy, and the stubs into build/ (never into site-packages: a stub-only 'tensorrt' would import there).
$PY -m mypy --version >/dev/null 2>&1 || $PY -m pip install -q mypy
rm -rf build/stubs build/tensorrt-stubs-pkg build/mypy-path
$PY -m pip install -q --no-deps --target build/tensorrt-stubs-pkg "tensorrt-stubs==$STUBS_VERSION"
mkdir -p build/stubs
cp -r build/tensorrt-stubs-pkg/tensorrt build/tensorrt-stubs-pkg/tensorrt_bindings build/stubs/

# 2. The published stubs do not parse as-is (shared/TENSORRT.md): patch three things; the 4th is mypy-tensorrt.ini.
$PY - <<'PATCH'
import pathlib, re
root = pathlib.Path("build/stubs")
for path in root.rglob("*.pyi"):
    text = path.read_text()
    text = re.sub(r"([(,]\s*)in(\s*:)", r"\1in_\2", text)  # 1. a parameter named `in` (a keyword)
    text = text.replace("power: Weights = None, channel_axis: int)", "power: Weights = None, channel_axis: int = 0)")
    text = re.sub(r"^import tensorrt_libs.*$", "", text, flags=re.M)  # 3. not a module the stubs ship
    path.write_text(text)
PATCH

# 3. The cyclediff package as mypy must see it (its editable install uses an import hook mypy cannot follow).
mkdir -p build/mypy-path/cyclediff
for f in api/*.py; do ln -s "$PWD/$f" build/mypy-path/cyclediff/; done
for d in export engine runtime; do ln -s "$PWD/$d" "build/mypy-path/cyclediff/$d"; done

# 4. Every module that imports tensorrt, by its cyclediff module name.
modules=()
for f in $(grep -rlE '^\s*(import tensorrt|from tensorrt)' --include='*.py' export engine runtime api | sort); do
  m=${f%.py}; m=${m%/__init__}; m=${m//\//.}
  case $m in api) m=cyclediff ;; api.*) m=cyclediff.${m#api.} ;; *) m=cyclediff.$m ;; esac
  modules+=(-m "$m")
done
echo "mypy (tensorrt-stubs $STUBS_VERSION): ${modules[*]}"
$PY -m mypy --config-file mypy-tensorrt.ini "${modules[@]}"
