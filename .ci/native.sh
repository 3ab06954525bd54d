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

# 2. The library with the libtorch executor, the example host and every test (golden values from $PYTHON).
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCYCLEDIFF_PYTHON="$PYTHON" >/dev/null
cmake --build "$BUILD" -j "$JOBS"
ctest --test-dir "$BUILD" -j "$JOBS" --output-on-failure
built=$(date +%s)
echo "native: release build + ctest in $(( built - start )) s"

# 3. Sanitizers on everything but libtorch: tokenizer, schedule, manifest, the engine and the C ABI behind a
#    stub executor (libtorch's translation unit would add ~2 min of ASan compile; see native/README.md).
cmake -S . -B "$BUILD-asan" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCYCLEDIFF_SANITIZE=ON -DCYCLEDIFF_WITH_TORCH=OFF \
      -DCYCLEDIFF_BUILD_EXAMPLE=OFF -DCYCLEDIFF_PYTHON="$PYTHON" >/dev/null
cmake --build "$BUILD-asan" -j "$JOBS"
ctest --test-dir "$BUILD-asan" -j "$JOBS" --output-on-failure
echo "native: ASan build + ctest in $(( $(date +%s) - built )) s; native total $(( $(date +%s) - start )) s"
