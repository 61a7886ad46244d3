#!/usr/bin/env bash
# The benchmark's W1 and W2 (learn2learn, torch.func) and W3, W3-chunked (hypnettorch, torch.func)
# in PyTorch and in this library, one after the other on the same machine, and one table of both:
#
#   PEERS_PYTHON=/path/to/scratch-venv/bin/python bash experiments/peers/side_by_side.sh [benchmark flags]
#
# PEERS_PYTHON: the python of a scratch environment with torch, learn2learn and hypnettorch,
# outside the project (how to make one: the docstring of experiments/peers/maml_torch.py, then
# `pip install hypnettorch==0.0.4 matplotlib`). The hypernetwork peers start from the library's
# weights and check their meta-gradient against the library's first (experiments.peer_check).
# Each peer runs twice: with glibc's default malloc settings (as its users run it) and
# with the settings that `hypernet.runtime.keep_freed_memory()` applies to this
# library's experiments (GLIBC_TUNABLES below), so that the comparison is also made with
# the same allocator. Then `python -m experiments.benchmark --peers=...` times this
# library's workloads and writes the JSON and the table (pass --readme=README.md to put
# it in the README). Run it on an idle machine: every figure is a wall-clock rate.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PEERS_PYTHON:?set PEERS_PYTHON to the python of the scratch environment with the peers}
OUT=${PEERS_OUT:-workdirs/peers}
# The one definition of the settings: hypernet.runtime.GLIBC_TUNABLES.
KEEP=$(python -c 'from hypernet import runtime; print(runtime.GLIBC_TUNABLES)')
mkdir -p "$OUT"
for workload in W1 W2; do
  for impl in learn2learn torchfunc; do
    "$PY" experiments/peers/maml_torch.py --impl=$impl --workload=$workload --windows=3 \
        --window_s=5 --out="$OUT/${impl}_${workload}_default.json"
    GLIBC_TUNABLES=$KEEP "$PY" experiments/peers/maml_torch.py --impl=$impl --workload=$workload \
        --windows=3 --window_s=5 --out="$OUT/${impl}_${workload}_keep.json"
  done
done
python -m experiments.peer_check --out_dir="$OUT/check"
for workload in W3 W3-chunked; do
  for impl in torchfunc hypnettorch_loop hypnettorch_batched; do
    args=(--impl=$impl --workload=$workload --check="$OUT/check/$workload.npz" --windows=3
          --window_s=5)
    "$PY" experiments/peers/hnet_torch.py "${args[@]}" --out="$OUT/${impl}_${workload}_default.json"
    GLIBC_TUNABLES=$KEEP "$PY" experiments/peers/hnet_torch.py "${args[@]}" \
        --out="$OUT/${impl}_${workload}_keep.json"
  done
done
python -m experiments.benchmark --peers="$OUT/*.json" "$@"
