#!/usr/bin/env bash
# Throughput run: one epoch cut to --steps=N training steps (default 1000), no validation,
# on eight devices of this node, one process each (device=auto: npu, else cuda; or -- device=cuda_8p). ModelZoo interface:
#   bash scripts/train_performance_8p.sh --data_path=/data/imagenet [--batch_size=N] [--device_id=N] [-- overrides]
# The log goes to test/output/<device>/ and the run ends with the ModelZoo summary (ActualFPS, ...).
RANKS=8 PRESET=seed_8p PERF=1
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
