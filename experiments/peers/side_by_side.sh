#!/usr/bin/env bash
# The benchmark's W1 and W2 in PyTorch (learn2learn, torch.func) and in this library, one
# after the other on the same machine, and one table of both:
#
#   PEERS_PYTHON=/path/to/scratch-venv/bin/python bash experiments/peers/side_by_side.sh [benchmark flags]
#
# PEERS_PYTHON: the python of a scratch environment with torch and learn2learn, outside
# the project (how to make one: the docstring of experiments/peers/maml_torch.py).
# Each peer runs twice: with glibc's default malloc settings (as its users run it) and
# with the settings that `hypernet.runtime.keep_freed_memory()` applies to this
# library's experiments (GLIBC_TUNABLES below), so that the comparison is also made with
# the same allocator. Then `python -m experiments.benchmark --peers=...` times this
# library's workloads and writes the JSON and the table (pass --readme=README.md to put
# it in the README). Run it on an idle machine: every figure is a wall-clock rate.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PEERS_PYTHON:?set PEERS_PYTHON to the python of the scratch environment with torch and learn2learn}
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
python -m experiments.benchmark --peers="$OUT/*.json" "$@"
