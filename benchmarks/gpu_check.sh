#!/usr/bin/env bash
# The GPU checks of the device path, in one go (run on a machine with CUDA, from the repo root):
# the CUDA tests, every model's training/evaluation speed in fp32 and bf16 autocast, and NRMS and
# FUM trained one epoch on mlsmall_mind through the CLI (GloVe 50-d as a text file).
#   DATA=../shared/data/mlsmall_mind GLOVE=glove.6B.50d.txt OUT=/tmp/gpu bash benchmarks/gpu_check.sh
set -uo pipefail
DATA=${DATA:-../shared/data/mlsmall_mind}
GLOVE=${GLOVE:-glove-6b-50d}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi -L
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
$PY -m pytest -q -p no:cacheprovider tests/test_device.py 2>&1 | tail -5
$PY benchmarks/bench_speed.py --data "$DATA" --device cuda --threads 4 --batches 60 --json "$OUT/speed_fp32.json"
$PY benchmarks/bench_speed.py --data "$DATA" --device cuda --threads 4 --batches 60 --amp --json "$OUT/speed_amp.json"
$PY benchmarks/bench_speed.py --data "$DATA" --device cuda --threads 4 --batches 30 --amp --batch-size 256 \
    --models nrms fum naml --json "$OUT/speed_amp_b256.json"
for spec in "nrms false" "nrms true" "fum false" "fum true"; do
  set -- $spec
  $PY -m newsrank train --model "$1" --data "$DATA" --out "$OUT/run_$1_amp$2" --epochs 1 -q \
      --set embeddings="$GLOVE" --set device=cuda --set amp="$2" --set threads=4
  tail -1 "$OUT/run_$1_amp$2/log.jsonl" | $PY -c "import json,sys; r=json.loads(sys.stdin.read()); \
print('$1 amp=$2', 'auc %.4f' % r['dev']['auc'], '%.0f samples/s' % r['train_samples_per_s'], \
'%.0f imp/s' % r['eval_impressions_per_s'])"
done
