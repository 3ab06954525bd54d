#!/usr/bin/env bash
# One command: set up the environment and run every test — pytest, the TensorRT type check, the C++ ctest.
# Extra arguments go to pytest (e.g. `bash tools/test.sh -k parity`).
set -euo pipefail
. "$(dirname "$0")/env.sh"
python -m pytest -q "$@"
bash .ci/typecheck_tensorrt.sh
if [ -f CMakeLists.txt ] && [ -f .ci/native.sh ]; then
  bash .ci/native.sh
fi
