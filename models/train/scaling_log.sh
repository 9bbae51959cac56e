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
#
# OUT: the build's folder (valid.pairs, test.pairs, work/); BUNDLE: OUT/bundle-int8.promise
# unless given. Env: PY (python3), PROMISE_BIN (target/release/promise), KPLUS (the K+ list),
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
if [[ $SAMPLE -gt 0 ]]; then
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
  q=$("$BIN" eval --bundle "$BUNDLE" --pairs "$PAIRS/$split.pairs" --results 20 --per-level --json \
        --beams "$k" --candidates "$c" "$@")
  b=$("$BIN" bench --bundle "$BUNDLE" --pairs "$OUT/test.pairs" --results 20 --requests 2000 --warmup --json \
        --beams "$k" --candidates "$c" "$@")
  "$PY" -c 'import json,sys; q=json.loads(sys.argv[1]); b=json.loads(sys.argv[2]); q["split"]=sys.argv[3]; q["p50_ms"]=b["p50_ms"]; q["p99_ms"]=b["p99_ms"]; print(json.dumps(q))' "$q" "$b" "$split" >> "$rows"
  echo "$split K'=$k K+=$c $*: $(tail -1 "$rows" | cut -c1-200)" >&2
}
for split in valid test; do
  for k in 4 16; do
    point "$split" "$k" 20 --no-prm
    for c in $KPLUS; do
      [[ $c -ge $k ]] && point "$split" "$k" "$c" --mix "$MIX"
    done
  done
done
mv "$rows" "$DEST/scaling.jsonl"
if [[ -f $OUT/work/head_valid.json && -f $OUT/work/head_test.json ]]; then
  cp "$OUT/work/head_valid.json" "$OUT/work/head_test.json" "$DEST/"
fi
"$PY" "$HERE/scaling_plot.py" "$DEST"
