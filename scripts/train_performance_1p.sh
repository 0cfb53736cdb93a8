#!/usr/bin/env bash
# Throughput run: one epoch cut to --steps=N training steps (default 1000), no validation,
# on one device (--device_id=N, default $ASCEND_DEVICE_ID or 0). ModelZoo interface:
#   bash scripts/train_performance_1p.sh --data_path=/data/imagenet [--batch_size=N] [--device_id=N] [-- overrides]
# The log goes to test/output/<device>/ and the run ends with the ModelZoo summary (ActualFPS, ...).
RANKS=1 PRESET=seed_1p PERF=1
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
