#!/usr/bin/env bash
# The one prepared GPU run (issue 23): the key measurement first, then the GPU tests, throughput, torch.compile.
#
#   bash tools/fill_wheels.sh                                  # here, once: diffusers & co. as wheels in .whl/
#   bash benchmarks/gpu_check.sh RESULTS_DIR                   # on the GPU machine (device tool: carry [".whl"])
#   CPU_SMOKE=1 bash benchmarks/gpu_check.sh /tmp/gpu-smoke    # here: every stage tiny on the CPU (~1 min)
#
# Stages, in order of what the run is for (each under its own timeout, the whole under GPU_CHECK_BUDGET_S,
# default 420 s; a stage that fails or times out still leaves the others' results, and one that no longer fits
# is skipped with the reason):
#   env, wheels, imports  the GPU, torch, the carried wheels, every cyclediff package importable
#   export                SD v1.4's architecture with random weights, exported once, torch-only (no ONNX Runtime
#                         or OpenVINO steps: the torch backend never uses them)
#   key                   benchmarks/gpu_key.py: 512², 50 steps x 0.8, one process, RESULTS_DIR/key.json rewritten
#                         after every row (cyclediff fp16 + CUDA graphs, fp16 eager, diffusers fp16 eager, fp32
#                         reference with TF32 off; PSNR, latent error, peak memory, capture report, SDPA kernels)
#   pytest                the GPU test files only (tests/test_cuda_graph_gpu.py, test_gpu_engine.py, test_tensorrt.py)
#   throughput            fp16, 1 and 4 clients, the same export
#   compile               diffusers + torch.compile(unet) against cyclediff, if time remains
# Writes RESULTS_DIR/gpu_check.log (all output), RESULTS_DIR/key.json, RESULTS_DIR/results.json (per stage: status,
# seconds, exit code, and the stage's JSON). Exit code: 0 when every stage that ran passed.
#
# Env: CPU_SMOKE=1, GPU_CHECK_BUDGET_S, PYTHON, CYCLEDIFF_CACHE (default /tmp/cyclediff-cache).
set -uo pipefail
RESULTS=${1:?usage: bash benchmarks/gpu_check.sh RESULTS_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
LOG=$RESULTS/gpu_check.log
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)  # stage JSONs; merged into results.json (the device tool returns <= 8 files)
PY=${PYTHON:-python3}
SMOKE=${CPU_SMOKE:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-420}
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

# The package as its pyproject maps it (cyclediff = api/, cyclediff.export = export/, ...), without pip: every
# package, so that any module a test or benchmark imports resolves.
SRC=$WORK/src
mkdir -p "$SRC/cyclediff"
for f in api/*.py; do ln -s "$PWD/$f" "$SRC/cyclediff/"; done
for d in export engine runtime serve; do ln -s "$PWD/$d" "$SRC/cyclediff/$d"; done
ln -s "$PWD/evaluation" "$SRC/cyclediff/eval"
SITE=$WORK/site
if compgen -G ".whl/*.whl" >/dev/null; then
  stage wheels 120 10 - $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl
else
  skip wheels "no .whl/*.whl here (bash tools/fill_wheels.sh fills it); using the installed packages"
fi
export PYTHONPATH=$SITE:$SRC${PYTHONPATH:+:$PYTHONPATH}
stage imports 60 5 - $PY -c 'import diffusers, cyclediff, cyclediff.runtime.engine, cyclediff.export.pipeline; print("diffusers", diffusers.__version__, "cyclediff from", cyclediff.__file__)'

EXPORT=$CYCLEDIFF_CACHE/gpu-check-export
if [[ $SMOKE == 1 ]]; then  # tiny CPU stand-ins for every stage
  EXPORT=$WORK/export ARCH=tiny
  KEY=(--device cpu --steps 4 --warmup 1 --repeat 1)
  THR=(--device cpu --dtype fp16 --clients 1,4 --requests 4 --steps 3 --threads 2)
elif [[ $HAVE_CUDA == 1 ]]; then
  ARCH=sd-v1-4
  KEY=(--device cuda --size 512 --steps 50 --strength 0.8 --warmup 1 --repeat 3)
  THR=(--device cuda --dtype fp16 --clients 1,4 --requests 8 --steps 20 --size 512)
fi

if [[ $SMOKE != 1 && $HAVE_CUDA != 1 ]]; then
  for s in export key pytest throughput compile; do
    skip $s "no CUDA device (CPU_SMOKE=1 runs tiny CPU versions)"
  done
else
  # ---- 1. one export, torch-only; 2. the key measurement, first ---------------------------------------------------
  stage export 180 60 - $PY benchmarks/gpu_key.py --engine "$EXPORT" --arch $ARCH --export-only
  stage key 240 60 "$RESULTS/key.json" $PY benchmarks/gpu_key.py --engine "$EXPORT" "${KEY[@]}" \
    --json "$RESULTS/key.json"
  # ---- 3. the GPU tests (they skip, with reasons, without CUDA or TensorRT) ----------------------------------------
  stage pytest 120 30 - $PY -m pytest -p no:cacheprovider -q -rs tests/test_cuda_graph_gpu.py \
    tests/test_gpu_engine.py tests/test_tensorrt.py
  # ---- 4. throughput, fp16, 1 and 4 clients ------------------------------------------------------------------------
  stage throughput 120 40 - $PY benchmarks/throughput.py --engine "$EXPORT" --backends torch "${THR[@]}"
  # ---- 5. torch.compile, last, only if time remains ----------------------------------------------------------------
  if [[ $SMOKE == 1 ]]; then
    skip compile "GPU-only: torch.compile of the UNet is timed on CUDA"
  else
    stage compile 200 90 "$WORK/compile.json" $PY benchmarks/edit_latency.py --engine "$EXPORT" --device cuda \
      --dtype fp16 --backends torch --compile --no-stages --warmup 1 --repeat 2 --prompts 1 --json "$WORK/compile.json"
  fi
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
    for row in r.get("rows", []):
        if "scenario" in row:  # edit_latency.py
            ms = "-" if row["median_ms"] is None else f"{row['median_ms']:.1f}"
            print(f"{s['stage']}: {row['scenario']:<24} {row['impl']:<26} {ms:>9} ms  {row['memory']} {row['note']}")
        elif "first_edit_ms" in row:  # gpu_key.py
            mem = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f} MiB"
            print(f"{s['stage']}: {row['impl']:<30} first {row['first_edit_ms']:9.1f} ms  repeat "
                  f"{row['repeat_edit_ms']:9.1f} ms  peak {mem}")
        elif "error" in row:
            print(f"{s['stage']}: {row['impl']}: FAILED {row['error']}")
    for name, t in r.get("targets", {}).items():
        print(f"{s['stage']}: target {name} {t['value']:.3g} (>= {t['target']}) {'met' if t['met'] else 'NOT met'}")
PYEOF
say "done in ${SECONDS}s; log $LOG, results $RESULTS/results.json"
rm -rf "$WORK"
exit $FAILED
