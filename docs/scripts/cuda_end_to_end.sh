#!/usr/bin/env bash
# The CUDA path end to end: train (bf16, channels-last, compiled branches), stop by SIGTERM
# mid-run, resume, extend, eval (folder and .pt), export every format and check the ONNX file
# against eval on raw images. Run from the repository root on a machine with a GPU:
#   DATA=/path/to/data/dir bash docs/scripts/cuda_end_to_end.sh
# (DEVICE=cpu TRAIN_SIZE=2000 FAST=1 runs the same path on a CPU, without bf16 and compilation.)
set -euo pipefail
device=${DEVICE:-cuda}
numerics=(--precision bf16 --channels-last --compile)
[ -n "${FAST:-}" ] && numerics=()
export PYTHONPATH=src PYTHONUNBUFFERED=1
out=$(mktemp -d)
run="$out/run"
sd() { python3 -m stochdepth "$@"; }
common=(--model resnet20 --dataset fashion-mnist --data-dir "$DATA" --device "$device" --train-size "${TRAIN_SIZE:-20000}"
        --eval-size 2000 --epochs 3 "${numerics[@]}" --checkpoint-every-minutes 0)
python3 -m stochdepth train "${common[@]}" --out "$run" --no-progress &
pid=$!
sleep ${STOP_AFTER:-45}
kill -TERM "$pid" || true
status=0; wait "$pid" || status=$?
echo "SIGTERM exit status: $status (143 expected unless the run had finished)"
sd train --resume "$run"
sd train --resume "$run" --epochs 4
sd eval "$run" --device "$device" --data-dir "$DATA"
sd eval "$run/checkpoints/last.pt" --device "$device" --data-dir "$DATA"
for format in safetensors torchscript exported onnx; do
  sd export "$run" --format "$format" --out "$out/model.$format"
done
python3 - "$run" "$out/model.onnx" "$DATA" "$device" <<'PY'
import sys, dataclasses, torch, onnxruntime
from stochdepth.train import load_trained_model
from stochdepth.data import build_loaders
from stochdepth.data.readers import read_idx_gz
from pathlib import Path
run, onnx_path, data, device = sys.argv[1:]
model, config, spec = load_trained_model(run, device=device)
loaders = build_loaders(dataclasses.replace(config.data, eval_size=None, data_dir=data), 500, torch.device(device), 0)
with torch.no_grad():
    expected = torch.cat([model(images).argmax(1).cpu() for images, _ in loaders.test])
raw = read_idx_gz(Path(data) / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").unsqueeze(1).float().div(255).numpy()
session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
predicted = torch.cat([torch.from_numpy(session.run(None, {"images": raw[i:i + 1000]})[0]) for i in range(0, len(raw), 1000)])
print(f"ONNX (CPU, raw images) agrees with eval on {device}: {(predicted.argmax(1) == expected).double().mean().item():.4%} of {len(raw)}")
PY
