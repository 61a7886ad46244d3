#!/bin/bash
# The runs behind the README's sinusoid tables and claims section: seed 0 of every learner in
# workdirs/sinusoid/<algo>; MAML in the paper's setting (one inner step, evaluated after it;
# float32 and bfloat16) in workdirs/sinusoid_paper/; seeds 1 and 2 of MAML (both settings) and
# the hypernetwork learners in workdirs/sinusoid_seeds/<algo>_seed<n>; the learned update on the
# plain mean of its multi-step loss (inner.first_step_weight=0, seeds 0-2) in
# workdirs/sinusoid_uniform/; each finished run's record in results/ (experiments/claim_run.sh);
# then the tables and the claims from the records. Finished runs are skipped (each workdir
# resumes). Several processes can share the list: each takes the next run no other has
# claimed (a `<workdir>.claim` directory while it runs), the longest runs first:
#
#   bash experiments/sinusoid_seeds.sh            # every run, then the README sections
#   bash experiments/sinusoid_seeds.sh runs &     # on 2 cores: two processes ...
#   bash experiments/sinusoid_seeds.sh runs       # ... sharing the list
#   bash experiments/sinusoid_seeds.sh tables     # the README sections from the records
set -euo pipefail
cd "$(dirname "$0")/.."
RECORD_FILES='config.json results.json metrics.jsonl'  # the claims read metrics.jsonl
source experiments/claim_run.sh
PY=${PYTHON:-python}
CLAIM_ALGOS="maml amortised latent hypermaml learned_update"
list() {  # one run per line: <workdir> <config argument> [overrides]; the longest first
  for seed in 0 1 2; do
    for algo in maml learned_update; do
      if (( seed == 0 )); then echo "workdirs/sinusoid/$algo algo=$algo"
      else echo "workdirs/sinusoid_seeds/${algo}_seed$seed algo=$algo --config.seed=$seed"; fi
    done
  done
  for algo in fomaml metasgd anil reptile amortised latent hypermaml; do
    echo "workdirs/sinusoid/$algo algo=$algo"
  done
  for seed in 1 2; do
    for algo in $CLAIM_ALGOS; do
      [[ $algo == maml || $algo == learned_update ]] && continue
      echo "workdirs/sinusoid_seeds/${algo}_seed$seed algo=$algo --config.seed=$seed"
    done
  done
  echo "workdirs/sinusoid_paper/maml_paper algo=maml,paper"
  echo "workdirs/sinusoid_paper/maml_paper_bfloat16 algo=maml,paper --config.compute_dtype=bfloat16"
  for seed in 1 2; do
    echo "workdirs/sinusoid_seeds/maml_paper_seed$seed algo=maml,paper --config.seed=$seed"
  done
  local wd
  for seed in 0 1 2; do  # the learned update on the plain mean over its steps
    wd=workdirs/sinusoid_uniform/learned_update_uniform
    if (( seed > 0 )); then wd=${wd}_seed$seed; fi
    echo "$wd algo=learned_update --config.seed=$seed --config.inner.first_step_weight=0.0"
  done
}
run() {  # run <workdir> <config argument> [overrides]
  local wd=$1 arg=$2; shift 2
  claim_and_run "$wd" $PY -m experiments.sinusoid \
    --config=experiments/configs/sinusoid.py:$arg "$@"
}
tables() {
  $PY -m experiments.results_table \
    --runs='results/sinusoid/*,results/sinusoid_paper/*,results/sinusoid_uniform/learned_update_uniform' \
    --readme=README.md
  $PY -m experiments.claims \
    --runs='results/sinusoid/*,results/sinusoid_seeds/*,results/sinusoid_paper/*,results/sinusoid_uniform/*' \
    --readme=README.md --plot=docs/claims_heldout_vs_meta_steps.png
}
run_list_main "$@"
