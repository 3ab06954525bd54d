#!/usr/bin/env bash
# Native part of CI: libcyclediff built with CMake (-j2) and its ctest suite, then the pure-C++ parts again
# under AddressSanitizer/LeakSanitizer/UBSan. Run from the repository root in the project's venv (tools/env.sh):
# the tests export the built-in checkpoints with that Python and compare the C++ outputs with its runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
PYTHON="${CYCLEDIFF_PYTHON:-$(command -v python || command -v python3)}"
BUILD="${CYCLEDIFF_NATIVE_BUILD:-build/native}"
JOBS="${CYCLEDIFF_NATIVE_JOBS:-2}"
export CYCLEDIFF_CACHE="${CYCLEDIFF_CACHE:-$PWD/.cache/cyclediff}"

# 1. Debian packages (installed only when missing).
need=(cmake g++ ninja-build pkg-config nlohmann-json3-dev libstb-dev libutf8proc-dev libssl-dev)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "native: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The library with both CPU executors (OpenVINO, and libtorch, off by default for users but kept tested), the
#    example host and every test (golden values from $PYTHON).
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCYCLEDIFF_WITH_TORCH=ON -DCYCLEDIFF_PYTHON="$PYTHON" >/dev/null
cmake --build "$BUILD" -j "$JOBS"
ctest --test-dir "$BUILD" -j "$JOBS" --output-on-failure
built=$(date +%s)
echo "native: release build + ctest in $(( built - start )) s"

# 3. Sanitizers on everything but libtorch (its translation unit would add ~2 min of ASan compile; see
#    native/README.md): tokenizer, schedule, manifest, the engine and the C ABI behind a stub executor, and the
#    OpenVINO executor through the public C ABI: its fp32 and bf16 parity sets (test_parity) and the example host
#    (example_*, openvino_ir_or_onnx). The tests set TBB_ENABLE_SANITIZERS=1 so OpenVINO's TBB loads libtbbbind
#    without RTLD_DEEPBIND, which ASan refuses. The golden_* and python_* tests run the venv's plain Python.
cmake -S . -B "$BUILD-asan" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCYCLEDIFF_SANITIZE=ON -DCYCLEDIFF_WITH_TORCH=OFF \
      -DCYCLEDIFF_PYTHON="$PYTHON" >/dev/null
cmake --build "$BUILD-asan" -j "$JOBS"
ctest --test-dir "$BUILD-asan" -j "$JOBS" --output-on-failure
echo "native: ASan build + ctest in $(( $(date +%s) - built )) s; native total $(( $(date +%s) - start )) s"
