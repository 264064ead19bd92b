#!/usr/bin/env bash
# ResNet-110 on all of Fashion-MNIST, constant depth then stochastic depth (linear to p_L = 0.5), the
# paper's recipe shortened to EPOCHS (default 4: about 8 minutes of a recent GPU for both, to be timed
# on the first GPU session); prints each run's line, then the library's report (test errors at best
# validation, images/s and the epoch-time ratio).
# Usage: [DEVICE=cuda] [EPOCHS=4] [TRAIN_SIZE=...] bash docs/scripts/gpu_resnet110.sh OUT
# Checked on the CPU with: DEVICE=cpu EPOCHS=1 TRAIN_SIZE=256 EXTRA=--no-progress bash docs/scripts/gpu_resnet110.sh /tmp/g
set -euo pipefail
out=${1:?usage: gpu_resnet110.sh OUT}
device=${DEVICE:-cuda}
epochs=${EPOCHS:-4}
size=()
[[ -n ${TRAIN_SIZE:-} ]] && size=(--train-size "$TRAIN_SIZE" --eval-size "$TRAIN_SIZE")
precision=()
[[ $device == cuda* ]] && precision=(--precision bf16 --channels-last)
for rule in none linear; do
  python -m stochdepth train --preset fashion-mnist-resnet110 --survival-rule "$rule" --epochs "$epochs" \
    --device "$device" "${size[@]}" "${precision[@]}" ${EXTRA:-} --out "$out/runs/resnet110-$rule"
done
python -m stochdepth report "$out/runs" --out "$out/report"
sed -n '/Results/,/Figures/p' "$out/report/report.md"
