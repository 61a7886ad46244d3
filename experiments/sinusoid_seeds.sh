#!/bin/bash
# The runs behind the README's sinusoid tables and claims section: seed 0 of every learner in
# workdirs/sinusoid/<name> (bfloat16 MAML evaluated after its one trained step only), seeds 1
# and 2 of MAML and the hypernetwork learners in workdirs/sinusoid_seeds/<algo>_seed<n>; then
# the tables and the claims. Finished runs are skipped (each workdir resumes).
#
#   bash experiments/sinusoid_seeds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
run() {  # run <workdir> <algo> [overrides]
  local wd=$1 algo=$2; shift 2
  [ -f $wd/results.json ] && return 0
  mkdir -p "$(dirname $wd)"
  python -m experiments.sinusoid --config=experiments/configs/sinusoid.py:algo=$algo \
    --workdir=$wd "$@" > $wd.log 2>&1
}
for algo in maml fomaml metasgd anil reptile amortised latent hypermaml learned_update; do
  run workdirs/sinusoid/$algo $algo
done
run workdirs/sinusoid/maml_bfloat16 maml --config.compute_dtype=bfloat16 '--config.eval.steps=(0,1)'
for seed in 1 2; do
  for algo in maml amortised latent hypermaml learned_update; do
    run workdirs/sinusoid_seeds/${algo}_seed$seed $algo --config.seed=$seed
  done
done
python -m experiments.results_table --runs='workdirs/sinusoid/*' --readme=README.md
python -m experiments.claims --runs='workdirs/sinusoid/*,workdirs/sinusoid_seeds/*' \
  --readme=README.md --plot=docs/claims_heldout_vs_meta_steps.png
