#!/usr/bin/env bash
# The quality table of a log built with `build --log` (NowPlaying-1M: models/results/nowplaying),
# every row on the same protocol: each validation or test example's prefix ranks every item,
# the prefix's items excluded, an unknown or repeated target counted as a miss.
#
#   bash models/train/results_log.sh OUT DEST [NAME]
#
# OUT: the build's folder (work/log.pkl, sasrec.json, valid.pairs, test.pairs,
# bundle-int8.promise); DEST: where the result files and table.md go. Steps:
# - baselines: popularity, item-kNN (its window and decay chosen on validation);
# - SASRec: OUT/sasrec.json as `build` wrote it (best validation epoch, test read once);
# - promise-rt (the int8 bundle, fused CPU engine): a grid on validation (plain K' 16 and
#   64; PRM-guided K'/K+ 4/32 and 16/64 at mix 0.25 and 0.5), then on test the runtime's
#   default (K'=16 K+=64 mix 0.25) and the validation-best configuration, each read once;
# - table.md from all of them.
# Env: PY (python3), PROMISE_BIN (target/release/promise).
set -euo pipefail
OUT=${1:?usage: results_log.sh OUT DEST [NAME]}
DEST=${2:?usage: results_log.sh OUT DEST [NAME]}
NAME=${3:-$(basename "$DEST")}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PY:-python3}
BIN=${PROMISE_BIN:-$ROOT/target/release/promise}
BUNDLE=$OUT/bundle-int8.promise
mkdir -p "$DEST"
export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
"$PY" -m promise_train baselines --log "$OUT/work/log.pkl" --out "$DEST" --dataset "$NAME"
cp "$OUT/sasrec.json" "$DEST/sasrec.json"
ev() { "$BIN" eval --bundle "$BUNDLE" --results 20 --json "$@"; }
: > "$DEST/promise_valid.jsonl.tmp"
for k in 16 64; do
  # plain: the final pool must hold the 20 results
  ev --pairs "$OUT/valid.pairs" --no-prm --beams "$k" --candidates $((k < 20 ? 20 : k)) >> "$DEST/promise_valid.jsonl.tmp"
done
for kk in "4 32" "16 64"; do
  set -- $kk
  for mix in 0.25 0.5; do
    ev --pairs "$OUT/valid.pairs" --beams "$1" --candidates "$2" --mix "$mix" >> "$DEST/promise_valid.jsonl.tmp"
  done
done
mv "$DEST/promise_valid.jsonl.tmp" "$DEST/promise_valid.jsonl"
# the validation-best configuration (Recall@20, then NDCG@20)
best=$("$PY" - "$DEST/promise_valid.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
b = max(rows, key=lambda r: (r["recall@20"], r["ndcg@20"]))["config"]
print(f"--beams {b['beams']} --candidates {b['candidates']} --mix {b['mix']}" + ("" if b["prm"] else " --no-prm"))
EOF
)
{ ev --pairs "$OUT/test.pairs"; ev --pairs "$OUT/test.pairs" $best; } > "$DEST/promise_test.jsonl.tmp"
mv "$DEST/promise_test.jsonl.tmp" "$DEST/promise_test.jsonl"
"$PY" - "$DEST" "$BUNDLE" <<'EOF' > "$DEST/table.md.tmp"
import json, os, sys
d, bundle = sys.argv[1], sys.argv[2]
j = lambda f: json.load(open(os.path.join(d, f)))
pop, knn, sas = j("popularity.json"), j("iknn.json"), j("sasrec.json")
valid = [json.loads(l) for l in open(os.path.join(d, "promise_valid.jsonl"))]
test = [json.loads(l) for l in open(os.path.join(d, "promise_test.jsonl"))]
def cfg(c):
    return (f"plain K'={c['beams']} (pool {c['candidates']})" if not c["prm"]
            else f"PRM K'={c['beams']} K+={c['candidates']} mix {c['mix']}")
def vrow(c):
    return next(r for r in valid if r["config"] == c)
print(f"{knn['items']:,} items; {pop['test_examples']:,} test examples "
      f"({pop['test_unknown_targets']:,} targets unseen in training, "
      f"{pop['test_repeat_targets']:,} repeating a prefix item: misses for every row).\n")
print("| model | valid R@20 | test R@10 | test N@10 | test R@20 | test N@20 |")
print("|---|---|---|---|---|---|")
f = lambda x: f"{x:.4f}"
print(f"| popularity | {f(pop['valid']['recall@20'])} | {f(pop['recall@10'])} | {f(pop['ndcg@10'])} | {f(pop['recall@20'])} | {f(pop['ndcg@20'])} |")
print(f"| item-kNN (last {knn['window']} items, decay {knn['decay']}; chosen on validation) | {f(knn['valid']['recall@20'])} | {f(knn['recall@10'])} | {f(knn['ndcg@10'])} | {f(knn['recall@20'])} | {f(knn['ndcg@20'])} |")
print(f"| SASRec ({sas['negatives']} sampled negatives, L={sas.get('max_len', 50)}, best epoch {sas['best_epoch']}) | {f(sas['valid_recall@20'])} | {f(sas['recall@10'])} | {f(sas['ndcg@10'])} | {f(sas['recall@20'])} | {f(sas['ndcg@20'])} |")
for i, r in enumerate(test):
    tag = "runtime default" if i == 0 else "validation-best"
    print(f"| promise-rt {os.path.basename(bundle)}, {cfg(r['config'])} ({tag}) | {f(vrow(r['config'])['recall@20'])} | {f(r['recall@10'])} | {f(r['ndcg@10'])} | {f(r['recall@20'])} | {f(r['ndcg@20'])} |")
print("\nValidation grid of promise-rt (Recall@20 / NDCG@20):\n")
for r in valid:
    print(f"- {cfg(r['config'])}: {f(r['recall@20'])} / {f(r['ndcg@20'])}")
EOF
mv "$DEST/table.md.tmp" "$DEST/table.md"
cat "$DEST/table.md"
