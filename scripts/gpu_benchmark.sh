#!/usr/bin/env bash
# Every GPU measurement of issue #9 in one script, for a session that is lent the GPU machine (one H200,
# 16 cores, 15 minutes of device time in all, no network, no hydra/omegaconf/DALI preinstalled).
#
# Prepare here (on the CPU machine, in the repository root), once:
#   echo /.whl/ >> .git/info/exclude
#   python3 ../shared/gpu/pack_wheels.py .whl hydra-core==1.3.2 omegaconf==2.3.0 antlr4-python3-runtime==4.9.3 \
#       nvidia-dali-cuda130==2.4.0 nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-libnvcomp-cu13==5.3.0.16 \
#       nvidia-nvjpeg2k-cu13 nvidia-nvtiff-cu13 astunparse gast optree nvtx makefun 'libcst~=1.8'
#   cat .whl/PLAN.txt        # one `run` per bundle, back to back (the machine forgets /tmp when idle)
# Then send the bundles as PLAN.txt says; the last command ends with (carry .whl/bundle_N):
#   ... && sh /tmp/wh/install.sh && export PYTHONPATH=/tmp/site && bash scripts/gpu_benchmark.sh
# with timeout_s 600. Results land in $OUT (benchmark.json/.md per configuration, summary.md, log.txt).
# If DALI does not install, the script still measures everything that needs no DALI and says so.
#
# GPU_BENCHMARK_DRY=1 bash scripts/gpu_benchmark.sh checks on any machine, in seconds, that every command below
# still composes with the config tree and passes check_config (no data, no GPU, nothing measured); a test runs it.
# PYTHON names the interpreter (default python3).
#
# Budget (estimated, not measured): JPEG folder ~30 s, each configuration ~20-40 s + model build; the
# compiled step adds ResNeXt-50's compile time (~1-2 min). Lower SECONDS_EACH (default 15) to fit a shorter lease.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
PY=${PYTHON:-python3}
DRY=${GPU_BENCHMARK_DRY:-0}
FAILED=0
SECONDS_EACH=${SECONDS_EACH:-15}
DATA=/tmp/jpegs
PARTS=16            # processes that write the JPEG folder, one class each
PER_CLASS=640       # 16 x 640 = 10,240 train images: 40 steps of batch 256 for e2e
COMMON=(device=cuda_1p dataset=folder "dataset.root=$DATA" dataset.batch_size=256 dataset.image_size=224
        dataset.val_resize=256 "benchmark.seconds=$SECONDS_EACH" benchmark.warmup_steps=5 benchmark.e2e_steps=40
        fps_warmup_steps=5)

"$PY" - <<'EOF' || { echo "hydra/omegaconf missing: install the bundles first (see the header)"; exit 3; }
import torch, hydra, omegaconf
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no GPU)")
EOF
if [ "$DRY" = 1 ]; then
    HAVE_DALI=1; echo "dry run: composing each command only"  # every command, DALI's included
elif "$PY" -c "import nvidia.dali, nvidia.dali.plugin.pytorch; print('DALI', nvidia.dali.__version__)"; then
    HAVE_DALI=1
else
    HAVE_DALI=0; echo "NVIDIA DALI does not import: the DALI figures are left out"
fi
[ "$DRY" = 1 ] || nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

make_jpegs() {  # the JPEG folder the loader and e2e figures read
    echo "== JPEG folder: $PARTS classes x $PER_CLASS train images, ~500x375 px, quality 90"
    rm -rf "$DATA" /tmp/jpeg_parts
    for k in $(seq 0 $((PARTS - 1))); do
        "$PY" -c "from resnext.data.jpeg_tree import make_jpeg_tree; \
make_jpeg_tree('/tmp/jpeg_parts/$k', 1, $PER_CLASS, $((PER_CLASS / 8)), seed=$k)" &
    done
    wait
    for split in train val; do
        mkdir -p "$DATA/$split"
        for k in $(seq 0 $((PARTS - 1))); do mv "/tmp/jpeg_parts/$k/$split/class_000" "$DATA/$split/class_$(printf %03d "$k")"; done
    done
    du -sh "$DATA"
}
[ "$DRY" = 1 ] || make_jpegs
rm -f "$OUT/commands.tsv"

bench() {  # bench NAME overrides...: one configuration into $OUT/NAME
    local name=$1; shift
    echo "== $name: $*"
    if [ "$DRY" = 1 ]; then  # one line per command, tab-separated, composed together at the end
        (IFS=$'\t'; echo "$name	${COMMON[*]}	hydra.run.dir=$OUT/$name	$*") >> "$OUT/commands.tsv"
    else
        timeout 300 "$PY" -m resnext.benchmark "${COMMON[@]}" "hydra.run.dir=$OUT/$name" "$@" || { echo "!! $name failed"; FAILED=1; }
    fi
}

# 1. Steps with data on the GPU: the ImageNet example's fp32 eager NCHW step vs bf16 + channels_last.
bench step_bf16 amp=bf16 "benchmark.only=[baseline_step,step]"
# 2. The same with torch.compile (compile time is part of the warm-up, not of the figure).
bench step_bf16_compile amp=bf16 model.compile=true "benchmark.only=[step]"
# 3. Loaders alone on the JPEG folder: 16 PIL workers vs DALI mixed (nvJPEG + hardware decoder).
if [ "$HAVE_DALI" = 1 ]; then LOADERS="[loader_torch,loader_dali]"; else LOADERS="[loader_torch]"; fi
bench loaders dataset.workers=16 "benchmark.only=$LOADERS"
# 4. The trainer end to end, bf16 + channels_last: torch loader (16 workers) vs DALI mixed.
bench e2e_torch amp=bf16 dataset.loader=torch dataset.workers=16 "benchmark.only=[e2e]"
if [ "$HAVE_DALI" = 1 ]; then
    bench e2e_dali amp=bf16 dataset.loader=dali "benchmark.only=[e2e]"
fi

if [ "$DRY" = 1 ]; then
    "$PY" - "$OUT/commands.tsv" <<'EOF'
import sys
from hydra import compose, initialize_config_module
from resnext.benchmark import MEASURES
from resnext.config.schema import check_config
failed = False
with initialize_config_module(config_module="resnext.conf", version_base="1.3"):
    for line in open(sys.argv[1]):
        name, *overrides = line.rstrip("\n").split("\t")
        try:
            cfg = compose(config_name="config", overrides=overrides)
            check_config(cfg)
            assert set(cfg.benchmark.only) <= set(MEASURES), f"benchmark.only={list(cfg.benchmark.only)}"
            print(f"{name}: composes")
        except Exception as err:  # every command's verdict, not only the first failure's
            print(f"!! {name} does not compose: {err}")
            failed = True
sys.exit(failed)
EOF
    exit $?
fi
echo "== summary"
"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = ["| configuration | measure | img/s | median step ms |", "| --- | --- | ---: | ---: |"]
for path in sorted(out.glob("*/benchmark.json")):
    report = json.loads(path.read_text())
    for name, r in report["results"].items():
        ms = "-" if r["step_ms_median"] is None else f"{r['step_ms_median']:.1f}"
        rows.append(f"| {path.parent.name} | {name} | {r['img_per_s']:.0f} | {ms} |")
env = report["env"] if rows[2:] else {}
text = f"GPU: {env.get('gpu')}; torch {env.get('torch')}; DALI {env.get('dali')}; {env.get('date')}\n\n" + "\n".join(rows)
(out / "summary.md").write_text(text + "\n")
print(text)
EOF
exit $FAILED
