#!/usr/bin/env bash
# Full training: the seed's recipe, validation after every epoch,
# on one device (--device_id=N, default $ASCEND_DEVICE_ID or 0). ModelZoo interface:
#   bash scripts/train_full_1p.sh --data_path=/data/imagenet [--batch_size=N] [--device_id=N] [-- overrides]
# The log goes to test/output/<device>/ and the run ends with the ModelZoo summary (ActualFPS, ...).
RANKS=1 PRESET=seed_1p PERF=0
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
