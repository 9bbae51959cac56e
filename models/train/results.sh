#!/usr/bin/env bash
# The results table of models/README.md: reference search (onnxruntime + NumPy, 1 thread)
# on the full ML-1M test split. Usage: results.sh PYTHON DATA_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=$1; DATA=$2
OUT=models/results
mkdir -p "$OUT"
$PY models/train/reference.py popularity --data "$DATA" > "$OUT/popularity.json"
CONFIGS=plain:4:10,prm:4:8:10,prm:4:16:10,prm:4:32:10,prm:4:8:10:0.5,prm:4:16:10:0.5,prm:4:32:10:0.5,plain:16:10,prm:16:32:10,prm:16:64:10,prm:16:128:10,prm:16:32:10:0.5,prm:16:64:10:0.5,prm:16:128:10:0.5
for b in ml1m ml1m-large; do
  rm -f "$OUT/$b.jsonl"
  $PY models/train/reference.py eval --bundle "models/$b" --data "$DATA" --split test --configs "$CONFIGS" --out "$OUT/$b.jsonl"
done
$PY models/train/sasrec.py --data "$DATA" --out "$OUT/sasrec.json"
$PY models/train/table.py "$OUT" > "$OUT/table.md"
