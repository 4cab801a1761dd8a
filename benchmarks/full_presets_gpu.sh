#!/usr/bin/env bash
# Full presets on a GPU machine, plus (optionally) quick-preset reproductions spread over its CPU cores.
#
#   benchmarks/full_presets_gpu.sh OUT_DIR [FULL_PAPERS=lenet5,ppo] [QUICK_PAPERS...]
#
# Each job is one `seminal reproduce` in the background with its own log and time limit (JOB_TIMEOUT,
# default 540 s); results/*.json and logs/ land in OUT_DIR and are packed into OUT_DIR/results.tgz.
# GPU-bound papers (vision, and SAC, whose update is one CUDA graph there: ~590 steps/s on an H200, so its
# 300k-step LunarLanderContinuous preset needs ~9 min) use cuda; env-bound RL papers are pinned to the CPU.
set -u
out=${1:?usage: full_presets_gpu.sh OUT_DIR [FULL_PAPERS] [QUICK_PAPERS...]}
full=${2:-lenet5,ppo}
shift $(( $# >= 2 ? 2 : $# ))
mkdir -p "$out/results" "$out/logs"
runs=${RUNS_DIR:-/tmp/seminal-runs}
export SEMINAL_THREADS=${SEMINAL_THREADS:-1}

job() {  # job NAME DEVICE ARGS...
  local name=$1 device=$2
  shift 2
  ( SEMINAL_DEVICE=$device timeout "${JOB_TIMEOUT:-540}" python3 -m seminal "$@" --results "$out/results" \
      --out "$runs" > "$out/logs/$name.log" 2>&1; echo "exit $?" >> "$out/logs/$name.log" ) &
}

for p in ${full//,/ }; do
  case $p in lenet5|backprop|weight-decay|relu|adam|dropout|sac) dev=auto ;; *) dev=cpu ;; esac
  job "$p-full" "$dev" reproduce "$p" --preset full --seeds 1 --quiet
done
for p in "$@"; do
  job "$p-quick" cpu reproduce "$p" --preset quick --seeds 3 --jobs 3 --quiet
done
wait
tar czf "$out/results.tgz" -C "$out" results logs
tail -n 3 "$out"/logs/*.log
