#!/usr/bin/env bash
# The short-budget experiment of docs/results.md (issue 27): ResNet-56 on the first 300 Fashion-MNIST
# training images, no augmentation, batch 32, lr 0.025 (Nesterov 0.9, weight decay 1e-4) divided by 10
# at 50% and 75% of the run; validation on all 5,000 held-out images every 10% of the run; the test
# set (all 10,000) once, with the best-validation weights. EPOCHS sets the length (9 steps of 32
# images an epoch; default 600, 5,400 steps): the go/no-go pilot at 300 epochs (2,700 steps) left
# the stochastic arm above 2% training error at the first drop, so the run was lengthened.
# Arms (ARMS, space-separated): none (constant depth), linear (p_L = 0.5, constant time schedule), or
# linear-<schedule><fraction> (p_L = 0.5 under a time schedule, e.g. linear-late0.5).
# Every arm of one seed runs side by side (one thread each, nice), so each seed's time ratios are
# measured on one machine under one load; seeds run one after another.
# EXTRA adds flags to every run (e.g. EXTRA="--recalibrate-batchnorm 300").
# Usage: ARMS="none linear" docs/scripts/time_schedule_experiment.sh OUT SEED [SEED ...]
# Run again to continue: finished runs are skipped, interrupted ones resume (--auto-resume).
set -euo pipefail
out=${1:?usage: ARMS="none linear" time_schedule_experiment.sh OUT SEED [SEED ...]}
shift
arms=${ARMS:-none linear}
read -r -a extra <<<"${EXTRA:-}"
epochs=${EPOCHS:-600}
eval_every=$((epochs * 9 / 10))
mkdir -p "$out/runs" "$out/logs"
run() {  # run ARM SEED
  local arm=$1 seed=$2 name flags=(--survival-rule none)
  name="resnet56-$arm-seed$seed"
  if [[ $arm == linear* ]]; then
    flags=(--survival-rule linear --final-survival-prob 0.5)
    if [[ $arm =~ ^linear-([a-z]+)([0-9.]+)$ ]]; then
      flags+=(--time-schedule "${BASH_REMATCH[1]}" --time-schedule-fraction "${BASH_REMATCH[2]}")
    fi
  fi
  [[ -f "$out/runs/$name/summary.json" ]] && return 0
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice python -m stochdepth train --model resnet56 "${flags[@]}" \
    --seed "$seed" --dataset fashion-mnist --train-size 300 --no-augment --epochs "$epochs" --batch-size 32 \
    --lr 0.025 --eval-every-iters "$eval_every" --no-test-every-eval --device cpu --no-progress \
    "${extra[@]}" --auto-resume --out "$out/runs/$name" >>"$out/logs/$name.log" 2>&1 || echo "$name failed" >&2
}
for seed in "$@"; do
  for arm in $arms; do run "$arm" "$seed" & done
  wait
  lscpu | grep -m1 'Model name' | sed "s/^/seed $seed ran on: /" >>"$out/machine.txt"
done
