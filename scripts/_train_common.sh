# Shared body of train_{full,performance}_{1p,8p}.sh (sourced, not run). The caller sets:
#   RANKS   1 or 8          PRESET  seed_1p or seed_8p          PERF  0 (full) or 1 (performance)
# Arguments (the seed's): --data_path=DIR --batch_size=N (global) --device_id=N (1p) --epochs=N
# --steps=N (performance: training steps to run, default 1000). Anything after `--` is passed to
# `python -m resnext.train` as Hydra overrides, last, so it wins (e.g. -- device=cpu amp=bf16).
# Environment: PYTHON (default python3), RESNEXT_OUTPUT_DIR (default <repo>/test/output),
# RESNEXT_AMP (auto: apex_o2 when apex imports, else the preset's fp16 with loss scale 1024).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}

usage() {
  echo "usage: $0 --data_path=DIR [--batch_size=N] [--device_id=N] [--epochs=N] [--steps=N] [-- hydra overrides...]"
}

data_path="" batch_size="" epochs="" steps="${PERF_STEPS:-1000}" device_id="${ASCEND_DEVICE_ID:-0}"
extra=()
while (($#)); do
  case "$1" in
    --data_path=*) data_path="${1#*=}" ;;
    --batch_size=*) batch_size="${1#*=}" ;;
    --device_id=*) device_id="${1#*=}" ;;
    --epochs=*) epochs="${1#*=}" ;;
    --steps=*) steps="${1#*=}" ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=env_npu.sh
source "$repo/scripts/env_npu.sh"

overrides=("experiment=$PRESET")
[[ -n $data_path ]] && overrides+=("dataset.root=$data_path")
[[ -n $batch_size ]] && overrides+=("dataset.batch_size=$batch_size")
[[ -n $epochs ]] && overrides+=("epochs=$epochs")
if ((RANKS == 1)); then
  overrides+=("device.device_list=[$device_id]")
  out_dir="${RESNEXT_OUTPUT_DIR:-$repo/test/output}/$device_id"
else
  out_dir="${RESNEXT_OUTPUT_DIR:-$repo/test/output}/${RANKS}p"
fi
if ((PERF)); then
  # A fixed number of steps through the config, never by editing source.
  overrides+=("epochs=1" "max_steps_per_epoch=$steps" "validate=false")
fi
amp=${RESNEXT_AMP:-auto}
if [[ $amp == auto ]]; then
  # The seed trained with apex O2; use it when a real apex (built from source) is installed.
  if "$python" -c "import apex.amp" >/dev/null 2>&1; then overrides+=("amp=apex_o2"); fi
else
  overrides+=("amp=$amp")
fi

mkdir -p "$out_dir"
log="$out_dir/train_${device_id}.log"
((RANKS == 1)) || log="$out_dir/train_${RANKS}p.log"
overrides+=("hydra.run.dir=$out_dir/run-$(date +%Y%m%d-%H%M%S)")

echo "[$(basename "$0")] $python -m resnext.train ${overrides[*]} ${extra[*]:-}"
echo "[$(basename "$0")] log: $log"
start=$(date +%s)
cd "$repo"
"$python" -m resnext.train "${overrides[@]}" "${extra[@]}" 2>&1 | tee "$log"
end=$(date +%s)

# ---- the ModelZoo summary, read from the log --------------------------------------------------------
# "... Epoch: [e] loss L Acc@1 A skipped S FPS@all F" per epoch; " * Acc@1 X Acc@5 Y" after validation.
value_after() {  # value_after KEY PATTERN: the token after KEY on the last log line matching PATTERN
  grep -a -- "$2" "$log" | awk -v key="$1" '{for (i = 1; i < NF; i++) if ($i == key) v = $(i + 1)} END {print v}'
}
fps=$(grep -a "FPS@all" "$log" | awk '{s += $NF; n++} END {if (n) printf "%.3f", s / n}')
global_batch=$(value_after batch "classes; global batch")  # the trainer's start line only: warnings name batches too
train_accuracy=$(value_after "Acc@1" "\* Acc@1")
actual_loss=$(value_after loss "FPS@all")
training_time=""
if [[ -n $fps && -n $global_batch ]]; then
  training_time=$(awk -v b="$global_batch" -v f="$fps" 'BEGIN {if (f > 0) printf "%.2f", b * 1000 / f}')
fi
network="ResNeXt50_for_PyTorch"
case_name="${network}_bs${global_batch}_${RANKS}p_$( ((PERF)) && echo perf || echo acc)"
summary="$out_dir/${case_name}.log"
{
  echo "Network = $network"
  echo "RankSize = $RANKS"
  echo "BatchSize = $global_batch"
  echo "CaseName = $case_name"
  echo "ActualFPS = ${fps:-None}"
  echo "TrainingTime = ${training_time:-None}"  # ms per step of the global batch
  echo "TrainAccuracy = ${train_accuracy:-None}"
  echo "ActualLoss = ${actual_loss:-None}"
  echo "E2ETrainingTime = $((end - start))"
} | tee "$summary"
