#!/bin/bash
# The flagship's Omniglot ablations: 3,000 meta-steps of 20-way 1-shot episodes each (the full
# cpu run: 10,000), one change at a time, scored on 600 VALIDATION episodes per setting (model
# choices never look at the test split), in workdirs/omniglot_ablation/<name> (records in
# results/omniglot_ablation/, experiments/claim_run.sh); then the README's ablation table
# (omniglot_table --split=val) from the records. Finished runs are skipped (each workdir resumes).
#
#   bash experiments/omniglot_ablation.sh              # every run, then the table
#   bash experiments/omniglot_ablation.sh runs gate    # only the runs whose workdir matches
#   bash experiments/omniglot_ablation.sh tables       # the table from the records
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/claim_run.sh
PY=${PYTHON:-python}
DATA=${HYPERNET_DATA_DIR:-../shared/data}
list() {  # one run per line: <workdir> <config argument> [overrides]
  local d=workdirs/omniglot_ablation
  echo "$d/protonet_constant_lr algo=protonet --config.optimizer.decay_every=0"
  echo "$d/film_constant_lr algo=support_metric --config.optimizer.decay_every=0" \
    "--config.head.refine=none --config.hypernet.kind=film --config.eval.conv_strategy=auto"
  echo "$d/protonet algo=protonet"
  echo "$d/attention algo=support_metric --config.head.refine=attention"
  echo "$d/metric algo=support_metric --config.head.refine=metric"
  echo "$d/attention_metric algo=support_metric"
  echo "$d/attention_metric_scale algo=support_metric --config.head.learn_scale=True"
  echo "$d/protonet_gate algo=protonet --config.model.gate=True"
  echo "$d/attention_metric_gate algo=support_metric --config.model.gate=True"
  # The flagship with FiLM of every convolution generated from the support set (TADAM / CNAPs)
  # under the decayed schedule (film_constant_lr: without the head, constant rate).
  echo "$d/attention_metric_film algo=support_metric --config.hypernet.kind=film" \
    "--config.eval.conv_strategy=auto"
}
run() {  # run <workdir> <config argument> [overrides]
  local wd=$1 arg=$2; shift 2
  claim_and_run "$wd" $PY -m experiments.omniglot \
    --config=experiments/configs/omniglot.py:$arg --config.data.dir=$DATA \
    --config.num_steps=3000 --config.eval.val_episodes=600 --config.eval.num_episodes=100 "$@"
}
tables() {
  $PY -m experiments.omniglot_table --runs='results/omniglot_ablation/*' --split=val \
    --readme=README.md
}
run_list_main "$@"
