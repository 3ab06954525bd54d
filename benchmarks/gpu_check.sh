#!/usr/bin/env bash
# The one prepared GPU check (issue 10): tests, CUDA-graph smoke, fp16 fidelity and the speed table, in one go.
#
#   bash benchmarks/gpu_check.sh RESULTS_DIR                 # on the GPU machine (torch with CUDA, no internet)
#   CPU_SMOKE=1 bash benchmarks/gpu_check.sh /tmp/gpu-smoke  # here: every stage tiny on the CPU (~3 min)
#
# Writes RESULTS_DIR/gpu_check.log (everything every stage printed) and RESULTS_DIR/results.json (per stage:
# status, seconds, exit code, and the stage's own JSON). Each stage has its own timeout and the whole run a
# budget (GPU_CHECK_BUDGET_S, default 480 s): a stage that fails or times out still leaves the others' results,
# and a stage that no longer fits is skipped with the reason. Exit code: 0 when every stage that ran passed.
#
# The GPU machine has torch with CUDA but no diffusers and no network. Bring diffusers and its pure-Python
# dependencies that its image lacks as wheels in /.whl/ (git-ignored), filled here with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform any -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 onnx_graphsurgeon==0.6.1
# (the rest of diffusers' needs, huggingface-hub>=1.32, safetensors>=0.8, regex, requests, filelock, Pillow and
# numpy, are in that image). Through the device tool: run `bash benchmarks/gpu_check.sh $OUT` with carry [".whl"].
#
# Env: CPU_SMOKE=1 (tiny CPU versions of every stage; the GPU-only ones skip), GPU_CHECK_BUDGET_S, PYTHON,
# FIDELITY_REF=cpu|cuda (where the fp32 reference runs; default cuda with TF32 off: the same fp32 arithmetic, in
# seconds instead of minutes), CYCLEDIFF_CACHE (default /tmp/cyclediff-cache).
set -uo pipefail
RESULTS=${1:?usage: bash benchmarks/gpu_check.sh RESULTS_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
LOG=$RESULTS/gpu_check.log
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)  # stage JSONs; merged into results.json (the device tool returns <= 8 files)
PY=${PYTHON:-python3}
SMOKE=${CPU_SMOKE:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
export PYTHONUNBUFFERED=1 CYCLEDIFF_CACHE=${CYCLEDIFF_CACHE:-/tmp/cyclediff-cache}
: >"$LOG"
: >"$WORK/stages.jsonl"
FAILED=0

say() { echo "[gpu_check $(date +%H:%M:%S) +${SECONDS}s] $*" | tee -a "$LOG"; }

record() {  # record NAME STATUS SECONDS RC REASON [JSON_FILE]
  local json=${6:-}
  [[ -n $json && -s $json ]] || json=""
  $PY - "$WORK/stages.jsonl" "$@" "$json" <<'PYEOF'
import json, sys
path, name, status, secs, rc, reason, data = sys.argv[1:8]
entry = {"stage": name, "status": status, "seconds": float(secs), "rc": int(rc), "reason": reason}
if data:
    try:
        entry["result"] = json.load(open(data))
    except ValueError as err:
        entry["result_error"] = str(err)
with open(path, "a") as f:
    f.write(json.dumps(entry) + "\n")
PYEOF
}

skip() {  # skip NAME REASON
  say "SKIP $1: $2"
  record "$1" skipped 0 0 "$2"
}

stage() {  # stage NAME TIMEOUT_S MIN_S JSON_FILE|- CMD... : run CMD under min(TIMEOUT_S, budget left)
  local name=$1 limit=$2 min=$3 json=$4
  shift 4
  local left=$((BUDGET - SECONDS))
  if ((left < min)); then
    skip "$name" "out of budget: ${left}s left of ${BUDGET}s, the stage needs at least ${min}s"
    return
  fi
  ((limit > left)) && limit=$left
  say "START $name (timeout ${limit}s): $*"
  local t0=$SECONDS rc=0
  timeout --signal=TERM --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1 || rc=$?
  local took=$((SECONDS - t0)) status=passed reason=""
  if ((rc == 124 || rc == 137)); then
    status=timeout reason="killed after ${limit}s"
  elif ((rc != 0)); then
    status=failed reason="exit code $rc (see gpu_check.log)"
  fi
  [[ $status == passed ]] || FAILED=1
  say "END $name: $status in ${took}s ${reason}"
  [[ $json == - ]] && json=""
  record "$name" "$status" "$took" "$rc" "$reason" "$json"
}

# ---- 0. environment: the GPU, torch, the project on the path, the carried wheels ----------------------------------
HAVE_CUDA=$($PY -c 'import torch; print(int(torch.cuda.is_available()))' 2>>"$LOG" || echo 0)
say "CPU_SMOKE=$SMOKE cuda=$HAVE_CUDA budget=${BUDGET}s results=$RESULTS"
stage env 60 5 - bash -c "nvidia-smi || true; $PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())'"

# The package as its pyproject maps it (cyclediff = api/, cyclediff.export = export/, ...), without pip.
SRC=$WORK/src
mkdir -p "$SRC/cyclediff"
for f in api/*.py; do ln -s "$PWD/$f" "$SRC/cyclediff/"; done
for d in export engine runtime; do ln -s "$PWD/$d" "$SRC/cyclediff/$d"; done
SITE=$WORK/site
if compgen -G ".whl/*.whl" >/dev/null; then
  stage wheels 120 10 - $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
else
  skip wheels "no .whl/*.whl here (see this script's header); using the installed packages"
fi
export PYTHONPATH=$SITE:$SRC${PYTHONPATH:+:$PYTHONPATH}
stage imports 60 5 - $PY -c 'import diffusers, cyclediff, cyclediff.runtime.engine; print("diffusers", diffusers.__version__, "cyclediff from", cyclediff.__file__)'

if [[ $SMOKE == 1 ]]; then  # tiny CPU stand-ins for every stage
  SRC_ARGS=(--ckpt tiny) FID=(--device cpu --dtype fp16 --ref-device cpu --steps 10)
  LAT=(--ckpt tiny --device cpu --steps 3 --warmup 0 --repeat 1 --prompts 1 --threads 2)
  THR=(--arch tiny --device cpu --clients 1,4,8 --requests 8 --steps 3 --threads 2)
  STEPS100=(--steps 4)
elif [[ $HAVE_CUDA == 1 ]]; then
  SRC_ARGS=(--arch sd-v1-4)
  FID=(--device cuda --dtype fp16 --ref-device "${FIDELITY_REF:-cuda}" --steps 50 --strength 0.8)
  LAT=(--arch sd-v1-4 --device cuda --dtype fp16 --warmup 1 --repeat 3 --prompts 2)
  THR=(--arch sd-v1-4 --device cuda --clients 1,4,8 --requests 8 --steps 20 --size 512)
  STEPS100=(--steps 100)
fi
BACKENDS=torch
if $PY -c 'import tensorrt; tensorrt.Builder' >/dev/null 2>&1 && [[ $HAVE_CUDA == 1 ]]; then BACKENDS=torch,tensorrt; fi

# ---- 1. tests: gpu- and tensorrt-marked (skips print their reasons), incl. the CUDA-graph smoke with threads ------
stage pytest 180 30 - $PY -m pytest -m "gpu or tensorrt" -p no:cacheprovider -q -rs tests/

if [[ $SMOKE != 1 && $HAVE_CUDA != 1 ]]; then
  for s in export fidelity edit_latency_compile edit_latency_100_steps throughput; do
    skip $s "no CUDA device (CPU_SMOKE=1 runs tiny CPU versions)"
  done
else
  # ---- 2. the SD v1.4 architecture (random weights) exported once; fp16 fidelity against fp32 -------------------
  stage export 240 60 - $PY benchmarks/fidelity.py "${SRC_ARGS[@]}" --export-only
  stage fidelity 150 30 "$WORK/fidelity.json" $PY benchmarks/fidelity.py "${SRC_ARGS[@]}" "${FID[@]}" \
    --json "$WORK/fidelity.json"
  # ---- 3. the speed table: diffusers fp16 eager and + torch.compile vs cyclediff, one run ------------------------
  if [[ $SMOKE == 1 ]]; then
    skip edit_latency_compile "GPU-only: torch.compile of the UNet is timed on CUDA (CPU smoke runs it without)"
    stage edit_latency 120 20 "$WORK/latency.json" $PY benchmarks/edit_latency.py "${LAT[@]}" --backends "$BACKENDS" \
      --json "$WORK/latency.json"
  else
    stage edit_latency_compile 240 90 "$WORK/latency.json" $PY benchmarks/edit_latency.py "${LAT[@]}" --compile \
      --backends "$BACKENDS" --json "$WORK/latency.json"
  fi
  stage throughput 150 40 - $PY benchmarks/throughput.py "${THR[@]}" --backends torch
  stage edit_latency_100_steps 150 40 "$WORK/latency100.json" $PY benchmarks/edit_latency.py "${LAT[@]}" \
    "${STEPS100[@]}" --backends "$BACKENDS" --no-stages --json "$WORK/latency100.json"
fi

# ---- results.json: every stage's record, in order -----------------------------------------------------------------
$PY - "$WORK/stages.jsonl" "$RESULTS/results.json" "$SMOKE" "$SECONDS" <<'PYEOF'
import json, sys
src, dst, smoke, secs = sys.argv[1:5]
stages = [json.loads(line) for line in open(src)]
json.dump({"cpu_smoke": smoke == "1", "seconds": int(secs), "stages": stages}, open(dst, "w"), indent=1)
print(f"\n{'stage':<24} {'status':<8} {'s':>5}  reason")
for s in stages:
    print(f"{s['stage']:<24} {s['status']:<8} {s['seconds']:5.0f}  {s['reason']}")
for s in stages:  # the numbers the issue asks for, so the tail of the output carries them
    r = s.get("result") or {}
    if "psnr_db" in r:
        print(f"\nfidelity: PSNR {r['psnr_db']:.2f} dB, finite {r['finite']}, guard {r['guard']}, pass {r['pass']}")
    for row in r.get("rows", []):
        ms = "-" if row["median_ms"] is None else f"{row['median_ms']:.1f}"
        print(f"{s['stage']}: {row['scenario']:<24} {row['impl']:<26} {ms:>9} ms  {row['memory']} {row['note']}")
    for backend, line in r.get("mfu", {}).items():
        print(f"{s['stage']}: {backend} {line}")
PYEOF
say "done in ${SECONDS}s; log $LOG, results $RESULTS/results.json"
rm -rf "$WORK"
exit $FAILED
