#!/bin/bash
# The runs behind the README's sinusoid tables and claims section: seed 0 of every learner in
# workdirs/sinusoid/<algo>; MAML in the paper's setting (one inner step, evaluated after it;
# float32 and bfloat16) in workdirs/sinusoid_paper/; seeds 1 and 2 of MAML and the
# hypernetwork learners in workdirs/sinusoid_seeds/<algo>_seed<n>; then the tables and the
# claims. Finished runs are skipped (each workdir resumes). A lane runs part of the list:
#
#   bash experiments/sinusoid_seeds.sh            # every run, then the README sections
#   bash experiments/sinusoid_seeds.sh runs 0 2   # runs 0, 2, 4, ... of the list only
#   bash experiments/sinusoid_seeds.sh runs 1 2   # ... and 1, 3, 5, ... (a second process)
#   bash experiments/sinusoid_seeds.sh tables     # the README sections from the runs found
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
CLAIM_ALGOS="maml amortised latent hypermaml learned_update"
list() {  # one run per line: <workdir> <config argument> [overrides]
  for algo in maml fomaml metasgd anil reptile amortised latent hypermaml learned_update; do
    echo "workdirs/sinusoid/$algo algo=$algo"
  done
  echo "workdirs/sinusoid_paper/maml_paper algo=maml,paper"
  echo "workdirs/sinusoid_paper/maml_paper_bfloat16 algo=maml,paper --config.compute_dtype=bfloat16"
  for seed in 1 2; do
    for algo in $CLAIM_ALGOS; do
      echo "workdirs/sinusoid_seeds/${algo}_seed$seed algo=$algo --config.seed=$seed"
    done
  done
}
run() {  # run <workdir> <config argument> [overrides]
  local wd=$1 arg=$2; shift 2
  [ -f $wd/results.json ] && return 0
  mkdir -p "$(dirname $wd)"
  echo "$(date +%T) $wd"
  $PY -m experiments.sinusoid --config=experiments/configs/sinusoid.py:$arg --workdir=$wd "$@" \
    > $wd.log 2>&1 || { echo "failed: $wd (see $wd.log)"; return 1; }
}
runs() {  # runs <lane> <lanes>
  local i=0 status=0
  while read -r line; do
    if (( i % $2 == $1 )); then run $line || status=1; fi
    i=$((i + 1))
  done < <(list)
  return $status
}
tables() {
  $PY -m experiments.results_table --runs='workdirs/sinusoid/*,workdirs/sinusoid_paper/*' \
    --readme=README.md
  $PY -m experiments.claims --runs='workdirs/sinusoid/*,workdirs/sinusoid_seeds/*' \
    --readme=README.md --plot=docs/claims_heldout_vs_meta_steps.png
}
case "${1:-all}" in
  runs) runs "${2:-0}" "${3:-1}" ;;
  tables) tables ;;
  all) runs 0 1 && tables ;;
  *) echo "usage: $0 [all | runs <lane> <lanes> | tables]" >&2; exit 2 ;;
esac
