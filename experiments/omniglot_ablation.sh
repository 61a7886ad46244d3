#!/bin/bash
# The flagship's Omniglot ablations: 3,000 meta-steps of 20-way 1-shot episodes each (the full
# cpu run: 10,000), one change at a time, scored on 600 VALIDATION episodes per setting (model
# choices never look at the test split); then the README's ablation table
# (omniglot_table --split=val). Finished runs are skipped (each workdir resumes).
#
#   bash experiments/omniglot_ablation.sh [--config.data.dir=../shared/data]
set -euo pipefail
cd "$(dirname "$0")/.."
out=workdirs/omniglot_ablation
mkdir -p $out
run() {  # run <name> <algo> [overrides]
  local name=$1 algo=$2; shift 2
  [ -f $out/$name/results.json ] && return 0
  python -m experiments.omniglot --config=experiments/configs/omniglot.py:algo=$algo \
    --config.num_steps=3000 --config.eval.val_episodes=600 --config.eval.num_episodes=100 \
    --workdir=$out/$name "${EXTRA[@]}" "$@" > $out/$name.log 2>&1
}
EXTRA=("$@")
run protonet_constant_lr protonet --config.optimizer.decay_every=0
run film_constant_lr support_metric --config.optimizer.decay_every=0 --config.head.refine=none \
  --config.hypernet.kind=film --config.eval.conv_strategy=auto
run protonet protonet
run attention support_metric --config.head.refine=attention
run metric support_metric --config.head.refine=metric
run attention_metric support_metric
run attention_metric_scale support_metric --config.head.learn_scale=True
run protonet_gate protonet --config.model.gate=True
run attention_metric_gate support_metric --config.model.gate=True
python -m experiments.omniglot_table --runs="$out/*" --split=val --readme=README.md
