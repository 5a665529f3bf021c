#!/usr/bin/env bash
# The test suite and the benchmarks on a GPU, in one command of at most 8 min.
#
#   bash benchmarks/device_check.sh [--dry-run] [--write-docs]
#                                   [--only STAGE,...] [OUT_DIR]
#
# Run it from the repository root with the machine's own python3 (PYTHON=...
# picks another); it installs nothing. OUT_DIR (else $SOFTJAX_DEVICE_OUT,
# else ${TMPDIR:-/tmp}/softjax-device-check) receives 7 files, no folders:
#   device_check.log   everything the script printed
#   env.md             device, versions, jax.devices(), optional packages
#   dense.md           benchmarks/bench.py --suite dense, plus (32768, 512)
#   sparse.md          benchmarks/bench.py --suite sparse, plus (32768, 512)
#   solver_steps.md    benchmarks/solver_steps.py: forward time vs n_iter
#   tests.txt          pytest -v of the whole suite on the GPU
#   gpu.md             all of it on one page: what docs/benchmarks/gpu.md
#                      holds (--write-docs copies it there, after a GPU run)
#
# Stages, each under its own time limit; a stage that fails or times out
# does not stop the next ones, and the script exits 1 if any failed:
#   env (45 s) -> dense (90 s) -> sparse (150 s) -> solver steps (90 s)
#   -> tests (what is left of SOFTJAX_DEVICE_BUDGET_S, default 460 s, but
#   at least 60 s) -> test log check (15 s) -> report (20 s)
# The benchmarks come first: their numbers can only be had on the GPU, their
# time is bounded and predictable, and they then run on an idle device. The
# suite's time on a GPU is the unknown (compilation is slower there), so it
# gets whatever time is left; if it is cut short, tests.txt still lists each
# test that finished (pytest -v).
#
# --only dense,sparse,steps,tests runs those stages (and env, always): a
# second call can give the suite the whole time budget, for instance.
#
# --write-docs copies gpu.md to docs/benchmarks/gpu.md when JAX found an
# accelerator (the env stage passed), even if a test failed: the page says.
#
# PyTorch entmax, the comparison column of sparse.md: torch must be on the
# machine; entmax is pure Python and, where the machine has no network,
# travels as a wheel in the git-ignored .whl/ folder of the checkout:
#   pip download --no-deps entmax -d .whl
# Every .whl/*.whl is put on PYTHONPATH (a pure-Python wheel imports from
# its zip).
#
# --dry-run: the same stages on the CPU in well under a minute, for the
# test suite (tests/test_device_check.py): tiny shapes, one repeat, and
# `pytest --collect-only` instead of running the suite.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"

COMMAND="bash benchmarks/device_check.sh $*"
DRY=0
WRITE_DOCS=0
ONLY=""
OUT="${SOFTJAX_DEVICE_OUT:-${TMPDIR:-/tmp}/softjax-device-check}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --write-docs) WRITE_DOCS=1 ;;
    --only)
      ONLY="${2:-}"
      for stage in ${ONLY//,/ } ""; do
        case "$stage" in
          dense|sparse|steps|tests) ;;
          "") [[ -n "$ONLY" ]] && continue ;&
          *) echo "--only takes some of dense,sparse,steps,tests" >&2; exit 2 ;;
        esac
      done
      shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"   # before the cd below: OUT may be relative
cd "$ROOT" || exit 2
# Files of an earlier run must not pass for this run's.
rm -f "$OUT"/{device_check.log,env.md,dense.md,sparse.md,solver_steps.md}
rm -f "$OUT"/{tests.txt,gpu.md}
# Output reaches the log (and tests.txt) even from a stage killed by timeout.
export PYTHONUNBUFFERED=1
BUDGET="${SOFTJAX_DEVICE_BUDGET_S:-460}"
WORKERS="${SOFTJAX_TEST_WORKERS:-14}"

# Everything printed also goes to the log.
exec > >(tee "$OUT/device_check.log") 2>&1
TEE_PID=$!

# Wheels that travelled with the checkout (see above).
shopt -s nullglob
for whl in "$ROOT"/.whl/*.whl; do
  PYTHONPATH="$whl${PYTHONPATH:+:$PYTHONPATH}"
done
shopt -u nullglob
export PYTHONPATH
# The multi-device tests use the 8 simulated host devices when the machine
# has one GPU (tests/_devices.py): keep the host platform available.
if [[ -n "${JAX_PLATFORMS:-}" && ",$JAX_PLATFORMS," != *",cpu,"* ]]; then
  export JAX_PLATFORMS="$JAX_PLATFORMS,cpu"
fi

STAGES=()
FAILED=0
ACCELERATOR=0
wanted() {  # wanted STAGE: true unless --only leaves it out.
  [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]
}
run_stage() {  # run_stage NAME LIMIT_S COMMAND...: runs it, records outcome.
  local name="$1" limit="$2" start=$SECONDS rc=0 outcome
  shift 2
  echo
  echo "::: $name (limit ${limit} s; ${start} s elapsed)"
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  case "$rc" in
    0) outcome="ok" ;;
    124|137) outcome="TIMED OUT after ${limit} s" ;;
    *) outcome="FAILED (exit $rc)" ;;
  esac
  echo "::: $name: $outcome, $((SECONDS - start)) s"
  STAGES+=("$name|$outcome|$((SECONDS - start))")
  if [[ "$rc" -ne 0 ]]; then FAILED=1; fi
}

finish() {  # finish STATUS: lets tee write the log's last lines, exits.
  exec 1>&- 2>&-
  wait "$TEE_PID" 2> /dev/null
  exit "$1"
}

# pytest, its output into tests.txt (a file, in case the stage is cut short).
PYTEST=(bash -c '"$@" > "$0" 2>&1' "$OUT/tests.txt" "$PY" -m pytest tests
        -p no:cacheprovider)

echo "softjax device check: $COMMAND"
echo "output folder: $OUT"
echo "dry run: $DRY; python: $("$PY" --version 2>&1) ($(command -v "$PY"))"
git -C "$ROOT" log -1 --format='commit %h %s' 2>/dev/null || true
if command -v nvidia-smi > /dev/null; then
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
fi

if [[ "$DRY" -eq 1 ]]; then
  # Tiny shapes, one repeat: every code path, in seconds.
  run_stage env 60 "$PY" benchmarks/device_report.py env --out "$OUT/env.md"
  DENSE=(--quick --repeats 1 --shapes 8x256 --extra-shapes 4x512)
  SPARSE=(--quick --repeats 1 --shapes 8x256)
  STEPS=(--quick --repeats 1 --shapes 8x512 --alphas 2,3)
  TESTS=(--collect-only -q)
  LIMITS=(60 60 60 60)
else
  run_stage env 45 "$PY" benchmarks/device_report.py env \
    --expect-accelerator --out "$OUT/env.md"
  ACCELERATOR=$(( FAILED == 0 ))
  DENSE=(--extra-shapes 32768x512)
  SPARSE=(--extra-shapes 32768x512)
  STEPS=()
  TESTS=(-n "$WORKERS" -v --durations=20)
  LIMITS=(90 150 90)
  # Several workers share one GPU: each allocates on demand instead of
  # reserving 75% of the memory (tests/conftest.py sets this too).
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
fi
if wanted dense; then
  run_stage dense "${LIMITS[0]}" "$PY" benchmarks/bench.py --suite dense \
    "${DENSE[@]}" --out "$OUT"
fi
if wanted sparse; then
  run_stage sparse "${LIMITS[1]}" "$PY" benchmarks/bench.py --suite sparse \
    "${SPARSE[@]}" --out "$OUT"
fi
if wanted steps; then
  run_stage "solver steps" "${LIMITS[2]}" "$PY" benchmarks/solver_steps.py \
    "${STEPS[@]}" --out "$OUT"
fi
if wanted tests; then
  # The suite gets what is left of the budget (the dry run: 60 s).
  left="${LIMITS[3]:-$((BUDGET - SECONDS - 30))}"
  if [[ "$left" -lt 60 ]]; then left=60; fi
  run_stage tests "$left" "${PYTEST[@]}" "${TESTS[@]}"
  # Failures, and skips for any reason but a missing optional package.
  run_stage "test log" 15 "$PY" benchmarks/device_report.py tests \
    "$OUT/tests.txt"
fi

echo
echo "::: report"
stage_args=()
for s in "${STAGES[@]}"; do stage_args+=(--stage "$s"); done
dry_flag=()
if [[ "$DRY" -eq 1 ]]; then dry_flag=(--dry-run); fi
timeout 20 "$PY" benchmarks/device_report.py assemble --dir "$OUT" \
  --command "$COMMAND" "${dry_flag[@]}" "${stage_args[@]}" || FAILED=1
if [[ "$WRITE_DOCS" -eq 1 ]]; then
  if [[ "$ACCELERATOR" -ne 1 || ! -f "$OUT/gpu.md" ]]; then
    echo "--write-docs: docs/benchmarks/gpu.md left alone (dry run, or no" \
         "accelerator); the report is $OUT/gpu.md"
  else
    cp "$OUT/gpu.md" "$ROOT/docs/benchmarks/gpu.md"
    echo "written to docs/benchmarks/gpu.md"
  fi
fi

echo
echo "::: summary ($SECONDS s in all)"
for s in "${STAGES[@]}"; do echo "  ${s//|/ : }"; done
if [[ -f "$OUT/tests.txt" ]]; then
  "$PY" benchmarks/device_report.py tests "$OUT/tests.txt" | head -60
fi
echo "files in $OUT:"
ls -l "$OUT"
if [[ "$FAILED" -ne 0 ]]; then
  echo "::: device check FAILED (see the stages above)"
  finish 1
fi
echo "::: device check passed"
finish 0
