#!/bin/bash
# The learned update rule's ablation (README, "The weight-conditioned hypernetwork"): seed 0,
# 3,000 meta-steps each (the full run: 20,000), one change at a time from the sinusoid config of
# algo=learned_update, evaluated after 0, 1, 5, 10 and 20 steps; then the README table. Every
# row trains on the plain mean of the multi-step loss (inner.first_step_weight=0, the config
# when the ablation was run; the weight on the first step, 0.5 since, is compared over 3 seeds
# in the README's claims section).
#
#   bash experiments/sinusoid_ablation.sh            # runs missing ones, then the table
set -euo pipefail
cd "$(dirname "$0")/.."
out=workdirs/sinusoid_ablation
mkdir -p $out
run() {
  local name=$1; shift
  [ -f $out/$name/results.json ] && return 0
  python -m experiments.sinusoid --config=experiments/configs/sinusoid.py:algo=learned_update \
    --config.num_steps=3000 '--config.eval.steps=(0,1,5,10,20)' '--config.eval.ood=()' \
    --config.inner.first_step_weight=0.0 \
    --config.eval.cost_repeats=0 --config.eval.track_tasks=0 --config.plots=False \
    --workdir=$out/$name "$@" > $out/$name.log 2>&1
}
seed_rule=(--config.rule.grad_features=raw '--config.rule.momentum_decays=()'
           '--config.rule.time_scales=()' --config.rule.update_kind=direct)
run full
run seed_rule "${seed_rule[@]}" --config.inner.steps=1 --config.inner.multi_step_loss=False
run seed_rule_unrolled "${seed_rule[@]}"
run update_residual --config.rule.update_kind=residual
run update_direct --config.rule.update_kind=direct
run one_step --config.inner.steps=1 --config.inner.multi_step_loss=False
run final_step_loss_only --config.inner.multi_step_loss=False
run raw_grads --config.rule.grad_features=raw
run log_sign_grads --config.rule.grad_features=log_sign
run no_momentum '--config.rule.momentum_decays=()'
run no_time '--config.rule.time_scales=()'
run first_order --config.inner.first_order=True
run hidden_32 '--config.rule.hidden=(32,)'
python -m experiments.results_table --runs="$out/*" --published=False --section=sinusoid_ablation \
  --readme=README.md
