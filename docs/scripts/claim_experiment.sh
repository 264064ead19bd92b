#!/usr/bin/env bash
# The claim experiment of docs/results.md: ResNet-32 on 1,000 Fashion-MNIST images, no augmentation,
# constant depth (6 seeds) against linear decay to p_L = 0.5 with the paper's scaling (6 seeds) and
# with the inverted scaling (4 seeds). Validation on all 5,000 held-out images every 2 epochs (62 steps); the
# test set (all 10,000 images) once, with the best-validation weights (--no-test-every-eval).
# Usage: docs/scripts/claim_experiment.sh OUT [WORKERS]   (each worker: one thread, nice)
# Run again to continue: finished runs are skipped, interrupted ones resume (--auto-resume).
set -euo pipefail
out=${1:?usage: claim_experiment.sh OUT [WORKERS]}
workers=${2:-2}
jobs=(none:paper:1 linear:paper:1 none:paper:2 linear:paper:2 linear:inverted:1 none:paper:3 linear:paper:3
      linear:inverted:2 none:paper:4 linear:paper:4 linear:inverted:3 none:paper:5 linear:paper:5
      linear:inverted:4 none:paper:6 linear:paper:6)
claims="$out/claims-$$"  # this invocation's claims: a rerun starts what is not finished
mkdir -p "$out/runs" "$claims" "$out/logs"
worker() {
  for job in "${jobs[@]}"; do
    IFS=: read -r rule scaling seed <<<"$job"
    name="resnet32-$rule"
    [[ $rule == linear ]] && name+="-p0.5"
    [[ $scaling == inverted ]] && name+="-inverted"
    name+="-seed$seed"
    [[ -f "$out/runs/$name/summary.json" ]] && continue
    mkdir "$claims/$name" 2>/dev/null || continue
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice python -m stochdepth train --model resnet32 \
      --survival-rule "$rule" --final-survival-prob 0.5 --scaling "$scaling" --seed "$seed" \
      --dataset fashion-mnist --train-size 1000 --no-augment --epochs 24 --batch-size 32 --lr 0.025 \
      --eval-every-iters 62 --no-test-every-eval --device cpu --no-progress \
      --auto-resume --out "$out/runs/$name" >"$out/logs/$name.log" 2>&1 || echo "$name failed" >&2
  done
}
for _ in $(seq "$workers"); do worker & done
wait
