#!/usr/bin/env bash
# Rebuild every shipped artefact from scratch: data -> SIDs -> training -> bundles ->
# golden files -> results. Run from anywhere; about 100 minutes on 2 cores.
# Env: PY (python, default: a venv made in models/train/work/venv), DATA (default data/).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=models/train/work
DATA=${DATA:-data}
mkdir -p "$WORK" "$DATA"
if [[ -z "${PY:-}" ]]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q -r models/train/requirements.txt
  PY="$WORK/venv/bin/python"
fi
T="$PY models/train"
$PY models/train/data.py "$DATA"                                            # fetch + check counts
$PY models/train/prepare.py --data "$DATA" --work "$WORK"                   # SIDs (~20 s)
# tiny test bundle (deterministic: fixed seed, 1 thread)
$PY models/train/train.py --work "$WORK" --data "$DATA" --size tiny --samples 12800 --batch 64 --lr 3e-3
$PY models/train/export.py --work "$WORK" --model tiny --out models/tiny --variants f32
# small and large: joint training (~16 and ~45 min), then the PRM refinement phase
$PY models/train/train.py --work "$WORK" --data "$DATA" --size small --samples 320000 &
$PY models/train/train.py --work "$WORK" --data "$DATA" --size large --samples 320000 --lr 1e-3 &
wait
$PY models/train/finetune_prm.py --work "$WORK" --data "$DATA" --model small --samples 150000 &
$PY models/train/finetune_prm.py --work "$WORK" --data "$DATA" --model large --samples 150000 &
wait
$PY models/train/export.py --work "$WORK" --model small --out models/ml1m
$PY models/train/export.py --work "$WORK" --model large --out models/ml1m-large
# golden files (synthetic histories) and the results table
$PY models/train/reference.py golden --bundle models/tiny --out tests/golden/tiny.json
$PY models/train/reference.py golden --bundle models/ml1m --out tests/golden/ml1m.json
bash models/train/results.sh "$PY" "$DATA"
