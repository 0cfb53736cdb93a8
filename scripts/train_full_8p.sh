#!/usr/bin/env bash
# Full training: the seed's recipe, validation after every epoch,
# on eight devices of this node, one process each (device=auto: npu, else cuda; or -- device=cuda_8p). ModelZoo interface:
#   bash scripts/train_full_8p.sh --data_path=/data/imagenet [--batch_size=N] [--device_id=N] [-- overrides]
# The log goes to test/output/<device>/ and the run ends with the ModelZoo summary (ActualFPS, ...).
RANKS=8 PRESET=seed_8p PERF=0
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"
