#!/usr/bin/env bash
# The supported range is the tested range: this script is how setup.cfg's floor (torch, torchvision, Python)
# gets tested. For each torch release in VERSIONS it makes a virtual environment of its own, installs that
# torch, its torchvision and this project with the test extra only (no mlflow/wandb/onnx/timm/DALI: those
# tests must skip), then runs the fast tests and the default job shortened, and prints one result line per
# version. README's "Supported versions" section quotes its last output.
#
#   bash scripts/compat.sh                   every entry of VERSIONS
#   bash scripts/compat.sh 2.4.0 2.15.0      only these torch releases
#
# Environment:
#   COMPAT_ROOT   where the environments and logs live (default ~/.cache/resnext-compat; a CUDA build of torch
#                 from PyPI takes 3-6 GB per environment: delete the folders you no longer need)
#   COMPAT_STEPS  install | test | all (default): install only, or run in environments already installed
#   COMPAT_EXTRAS extras besides test, comma-separated (e.g. "export,mlflow"); default none
#   PYTEST_ARGS   replaces the test selection (default: -m "not slow")
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

# torch  torchvision  python. Oldest first: the first line is setup.cfg's floor (torch_npu 2.4.0 is the oldest
# Ascend build it pairs with), 2.11.0 is the lent GPU machine's torch, 2.15.0 what a fresh `pip install` resolves
# (its torchvision is 0.29.2). 2.14.1 on Python 3.11 is the development and CI environment (README quick start).
VERSIONS=(
  "2.4.0  0.19.0 3.9"
  "2.11.0 0.26.0 3.11"
  "2.15.0 0.29.2 3.12"
)

ROOT=${COMPAT_ROOT:-$HOME/.cache/resnext-compat}
STEPS=${COMPAT_STEPS:-all}
EXTRAS=test${COMPAT_EXTRAS:+,$COMPAT_EXTRAS}
if [ -n "${PYTEST_ARGS:-}" ]; then read -r -a TEST_SELECTION <<< "$PYTEST_ARGS"; else TEST_SELECTION=(-m "not slow"); fi
# The shortened default job: the same model, data and recipe as `python -m resnext.train`, 512 of its 4000
# training images for one epoch; then two CPU ranks under distributed=spawn, the path that torch 2.4 broke.
JOB=(epochs=1 dataset.train_size=512 dataset.val_size=256)
SPAWN=(device=cpu device.nprocs=2 distributed=spawn epochs=1 dataset.train_size=256 dataset.val_size=128)

mkdir -p "$ROOT/logs"

find_python() {  # a working python3.X: on PATH, else the newest pyenv build of 3.X (pyenv's shim may refuse)
  local want=$1 candidate
  for candidate in "$(command -v "python$want")" \
      $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$want".*/bin/"python$want" 2>/dev/null | sort -V -r); do
    [ -n "$candidate" ] && "$candidate" -c '' 2>/dev/null && { echo "$candidate"; return 0; }
  done
  return 1
}

install() {  # venv torch torchvision python -> 0 when the environment is ready
  local venv=$1 torch=$2 vision=$3 py=$4 python pins stamp
  pins="$venv/compat-pins.txt"; stamp="torch==$torch torchvision==$vision python$py [$EXTRAS] $REPO"
  if [ -f "$venv/compat-installed" ] && [ "$(cat "$venv/compat-installed")" = "$stamp" ]; then return 0; fi
  python=$(find_python "$py") || { echo "no python$py on PATH or under pyenv"; return 1; }
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv" || return 1
  printf 'torch==%s\ntorchvision==%s\n' "$torch" "$vision" > "$pins"
  # PIP_CONSTRAINT replaces any machine-wide cap (a pip.conf `constraint`) for these calls only, and keeps the
  # project install from moving torch: every pip call in this environment is held to the pair above.
  PIP_CONSTRAINT=$pins "$venv/bin/python" -m pip install -q --no-cache-dir --upgrade pip setuptools wheel &&
    PIP_CONSTRAINT=$pins "$venv/bin/python" -m pip install -q --no-cache-dir "torch==$torch" "torchvision==$vision" &&
    PIP_CONSTRAINT=$pins "$venv/bin/python" -m pip install -q --no-cache-dir -e "$REPO[$EXTRAS]" || return 1
  echo "$stamp" > "$venv/compat-installed"
}

summary() {  # pytest's closing line, less its timing
  grep -E '^=*.*( passed| failed| error)' "$1" | tail -1 | sed -E 's/^=+ //; s/ in [0-9.]+s.*//'
}

run_tests() {  # venv log -> pytest's exit code
  echo "+ python -m pytest ${TEST_SELECTION[*]} -q -p no:cacheprovider" > "$2"
  (cd "$REPO" && "$1/bin/python" -m pytest "${TEST_SELECTION[@]}" -q -p no:cacheprovider) >> "$2" 2>&1
}

run_job() {  # venv log dir args... -> the command's exit code; dir/metrics.jsonl holds its epochs
  local venv=$1 log=$2 dir=$3; shift 3
  rm -rf "$dir"
  echo "+ python -m resnext.train $* hydra.run.dir=$dir" > "$log"
  (cd "$REPO" && "$venv/bin/python" -m resnext.train "$@" "hydra.run.dir=$dir") >> "$log" 2>&1
}

acc1() { tail -1 "$1/metrics.jsonl" 2>/dev/null | "$2" -c 'import json,sys; print(json.loads(sys.stdin.read())["acc1"])'; }

RESULTS=()
for entry in "${VERSIONS[@]}"; do
  read -r torch vision py <<< "$entry"
  if [ $# -gt 0 ] && [[ " $* " != *" $torch "* ]]; then continue; fi
  venv="$ROOT/$torch"; logs="$ROOT/logs/$torch"; tag="torch $torch torchvision $vision python $py"
  echo "== $tag: $venv"
  start=$SECONDS
  if ! install "$venv" "$torch" "$vision" "$py" > "$logs-install.log" 2>&1; then
    RESULTS+=("$tag: FAILED install ($(tail -1 "$logs-install.log"); $logs-install.log)"); continue
  fi
  echo "   installed in $((SECONDS - start)) s: $("$venv/bin/python" -c 'import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__, torchvision.__version__)')"
  [ "$STEPS" = install ] && { RESULTS+=("$tag: installed"); continue; }

  start=$SECONDS; run_tests "$venv" "$logs-tests.log"; tests_rc=$?; tests_s=$((SECONDS - start))
  tests="tests $(summary "$logs-tests.log") ($tests_s s)"
  echo "   $tests"
  start=$SECONDS; run_job "$venv" "$logs-job.log" "$ROOT/runs/$torch-job" "${JOB[@]}"; job_rc=$?
  job="job exit $job_rc, Acc@1 $(acc1 "$ROOT/runs/$torch-job" "$venv/bin/python") ($((SECONDS - start)) s)"
  echo "   $job"
  start=$SECONDS; run_job "$venv" "$logs-spawn.log" "$ROOT/runs/$torch-spawn" "${SPAWN[@]}"; spawn_rc=$?
  spawn="spawn exit $spawn_rc, Acc@1 $(acc1 "$ROOT/runs/$torch-spawn" "$venv/bin/python") ($((SECONDS - start)) s)"
  echo "   $spawn"
  verdict=passed; [ $tests_rc -eq 0 ] && [ $job_rc -eq 0 ] && [ $spawn_rc -eq 0 ] || verdict=FAILED
  RESULTS+=("$tag: $verdict; $tests; $job; $spawn")
done

echo "== $(date -u +%Y-%m-%d) results (logs in $ROOT/logs)"
printf '%s\n' "${RESULTS[@]}"
[[ "${RESULTS[*]}" != *FAILED* ]]
