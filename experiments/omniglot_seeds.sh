#!/bin/bash
# The runs behind the README's Omniglot table (issue 13), at CPU size, in workdirs/omniglot/<name>
# (records in results/omniglot/, experiments/claim_run.sh): ProtoNets on the plain and on the
# gated Conv-4 (seeds 0-4), then the support-set head (support_metric, seeds 0-2), on the
# MAML/ProtoNets protocol; the same on the official one (background alphabets for
# meta-training, evaluation alphabets for test; seeds 0-2); then one seed of every other
# hypernetwork learner, and of MAML, at 5-way 1-shot and 20-way 1-shot; then the table. On 2
# CPU cores a metric learner's run takes 30-45 minutes, a per-setting learner's 5-40.
# Finished runs are skipped (each workdir resumes). Several processes can share the list: each
# takes the next run no other has claimed (a `<workdir>.claim` directory while it runs):
#
#   bash experiments/omniglot_seeds.sh                  # every run, then the README table
#   bash experiments/omniglot_seeds.sh runs protonet    # only the runs whose workdir matches
#   bash experiments/omniglot_seeds.sh tables           # the README table from the records
set -euo pipefail
cd "$(dirname "$0")/.."
source experiments/claim_run.sh
PY=${PYTHON:-python}
DATA=${HYPERNET_DATA_DIR:-../shared/data}
list() {  # one run per line: <workdir> <config argument> [overrides]
  local seed algo protocol prefix ways
  # ProtoNets on the plain Conv-4 (the literature's baseline) and on the gated Conv-4
  # (`--config.model.gate=True`: the seed sketch's hypernetwork, an input-conditioned gate
  # multiplying every block's output; the best of the validation ablations,
  # experiments/omniglot_ablation.sh), seed by seed; then the support-set head
  # (support_metric).
  local seeds
  for protocol in maml official; do
    prefix=""
    seeds="0 1 2 3 4"  # 3-4: at 5-way 1-shot, near 99%, three seeds' intervals overlap
    [[ $protocol == official ]] && prefix="official_" && seeds="0 1 2"
    for seed in $seeds; do
      echo "workdirs/omniglot/${prefix}protonet_s$seed algo=protonet --config.seed=$seed" \
        "--config.data.protocol=$protocol"
      echo "workdirs/omniglot/${prefix}protonet_gate_s$seed algo=protonet --config.seed=$seed" \
        "--config.data.protocol=$protocol --config.model.gate=True"
    done
    for seed in 0 1 2; do
      echo "workdirs/omniglot/${prefix}support_metric_s$seed algo=support_metric" \
        "--config.seed=$seed --config.data.protocol=$protocol"
    done
  done
  # One model of the metric learner hyperhead serves every setting (as ProtoNets); the others
  # are trained per setting, beside MAML on the same budget (the baseline of the learners that
  # adapt by gradient steps).
  echo "workdirs/omniglot/hyperhead_s0 algo=hyperhead --config.seed=0"
  for ways in 5 20; do
    for algo in maml amortised latent hypermaml learned_update; do
      echo "workdirs/omniglot/${algo}_${ways}w1s_s0 ways=$ways,shots=1,algo=$algo --config.seed=0"
    done
  done
}
run() {  # run <workdir> <config argument> [overrides]
  local wd=$1 arg=$2; shift 2
  claim_and_run "$wd" $PY -m experiments.omniglot \
    --config=experiments/configs/omniglot.py:$arg --config.data.dir=$DATA "$@"
}
tables() {
  $PY -m experiments.omniglot_table --runs='results/omniglot/*' --readme=README.md
}
run_list_main "$@"
