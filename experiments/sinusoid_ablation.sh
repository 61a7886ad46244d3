#!/bin/bash
# The learned update rule's ablation (README, "The weight-conditioned hypernetwork"): seed 0,
# 3,000 meta-steps each (the full run: 20,000), one change at a time from the sinusoid config of
# algo=learned_update, evaluated after 0, 1, 5, 10 and 20 steps, in
# workdirs/sinusoid_ablation/<name> (records in results/sinusoid_ablation/,
# experiments/claim_run.sh); then the README table from the records. Every row trains on the
# plain mean of the multi-step loss (inner.first_step_weight=0, the config when the ablation was
# run; the weight on the first step, 0.5 since, is compared over 3 seeds in the README's claims
# section).
#
#   bash experiments/sinusoid_ablation.sh              # every run, then the table
#   bash experiments/sinusoid_ablation.sh runs rule    # only the runs whose workdir matches
#   bash experiments/sinusoid_ablation.sh tables       # the table from the records
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/claim_run.sh
PY=${PYTHON:-python}
list() {  # one run per line: <workdir> <config argument> [overrides]
  local d=workdirs/sinusoid_ablation a=algo=learned_update
  local seed_rule="--config.rule.grad_features=raw --config.rule.momentum_decays=()"
  seed_rule+=" --config.rule.time_scales=() --config.rule.update_kind=direct"
  echo "$d/full $a"
  echo "$d/seed_rule $a $seed_rule --config.inner.steps=1 --config.inner.multi_step_loss=False"
  echo "$d/seed_rule_unrolled $a $seed_rule"
  echo "$d/update_residual $a --config.rule.update_kind=residual"
  echo "$d/update_direct $a --config.rule.update_kind=direct"
  echo "$d/one_step $a --config.inner.steps=1 --config.inner.multi_step_loss=False"
  echo "$d/final_step_loss_only $a --config.inner.multi_step_loss=False"
  echo "$d/raw_grads $a --config.rule.grad_features=raw"
  echo "$d/log_sign_grads $a --config.rule.grad_features=log_sign"
  echo "$d/no_momentum $a --config.rule.momentum_decays=()"
  echo "$d/no_time $a --config.rule.time_scales=()"
  echo "$d/first_order $a --config.inner.first_order=True"
  echo "$d/hidden_32 $a --config.rule.hidden=(32,)"
}
run() {  # run <workdir> <config argument> [overrides]
  local wd=$1 arg=$2; shift 2
  claim_and_run "$wd" $PY -m experiments.sinusoid \
    --config=experiments/configs/sinusoid.py:$arg --config.num_steps=3000 \
    '--config.eval.steps=(0,1,5,10,20)' '--config.eval.ood=()' \
    --config.inner.first_step_weight=0.0 --config.eval.cost_repeats=0 \
    --config.eval.track_tasks=0 --config.plots=False "$@"
}
tables() {
  $PY -m experiments.results_table --runs='results/sinusoid_ablation/*' --published=False \
    --section=sinusoid_ablation --readme=README.md
}
run_list_main "$@"
