#!/usr/bin/env bash
# Ascend environment for torch_npu: `source scripts/env_npu.sh` (the train_*.sh scripts do).
# Sources CANN's set_env.sh when CANN is installed; on machines without it, it changes nothing that
# matters to CPU or CUDA runs.
_resnext_cann=""
# CANN up to 8.3 installs under ascend-toolkit/; 8.5 installs under cann/ (root: /usr/local/Ascend, others:
# $HOME/Ascend; hiascend.com, CANN 8.5.0 installation guide, "File Paths").
for _f in "${ASCEND_TOOLKIT_HOME:-}/set_env.sh" /usr/local/Ascend/ascend-toolkit/set_env.sh \
          "${HOME:-}/Ascend/ascend-toolkit/set_env.sh" /usr/local/Ascend/cann/set_env.sh \
          "${HOME:-}/Ascend/cann/set_env.sh"; do
  if [[ -f $_f ]]; then _resnext_cann=$_f; break; fi
done
if [[ -n $_resnext_cann ]]; then
  # CANN's script reads unset variables: relax `set -u` around it, then restore the caller's setting.
  case $- in *u*) _resnext_u=1 ;; *) _resnext_u=0 ;; esac
  set +u
  # shellcheck disable=SC1090
  source "$_resnext_cann"
  ((_resnext_u)) && set -u
  [[ -f /usr/local/Ascend/nnal/atb/set_env.sh ]] && { set +u; source /usr/local/Ascend/nnal/atb/set_env.sh; ((_resnext_u)) && set -u; }
fi
# The seed's runtime settings: task queue on, tolerant HCCL connection set-up on busy 8p nodes.
export TASK_QUEUE_ENABLE=${TASK_QUEUE_ENABLE:-1}
export HCCL_CONNECT_TIMEOUT=${HCCL_CONNECT_TIMEOUT:-1200}
export HCCL_WHITELIST_DISABLE=${HCCL_WHITELIST_DISABLE:-1}
unset _f _resnext_cann _resnext_u
