#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the pure-Python wheels that benchmarks/gpu_check.sh installs on the GPU machine,
# whose image (Python 3.12, torch with CUDA, transformers, onnx, onnxruntime, peft; no network) lacks them:
# diffusers (the reference pipelines), importlib_metadata (diffusers needs it) and onnx_graphsurgeon (fp16
# graphs). The versions are the ones installed here (else the pins below), so both machines run one diffusers.
#
#   bash tools/fill_wheels.sh          # then: the device tool's run with carry [".whl"]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
version() {  # version DIST FALLBACK: what is installed here, else FALLBACK
  "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null || echo "$2"
}
wanted=("diffusers==$(version diffusers 0.42.1)" "importlib_metadata==$(version importlib_metadata 10.2.0)"
        "onnx_graphsurgeon==$(version onnx_graphsurgeon 0.6.1)")
tmp=$(mktemp -d .whl.partial.XXXXXX)  # renamed into place when every wheel is there
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform any \
  -d "$tmp" "${wanted[@]}"
rm -rf .whl && mv "$tmp" .whl
trap - EXIT
echo "filled .whl/ with: ${wanted[*]}"
ls -l .whl
