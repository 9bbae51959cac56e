#!/usr/bin/env bash
# Any interaction log to a bundle that speaks the app's item ids, in one resumable command:
#
#   python -m promise_train build --log LOG --out OUT [--split loo|files --valid V --test T]
#                                 [--user-col C --item-col C --time-col C] [--quick]
#                                 [--codes-only] [--force]
#
# Steps (each checkpoints and returns at once when finished, so running the same command
# again after an interruption continues where it stopped): log (read, check, split) ->
# sasrec (the teacher, and the item embeddings the SIDs come from) -> sids -> train (the
# default recipe, the paper's verifier: a generator whose encoder reads one row per item
# beside the codes, trained jointly with the dense PRM, one learned row per trie prefix at
# every level, by per-level InfoNCE against sampled valid prefixes; every row starts from
# SASRec's item table, a prefix's row the mean of its items'; a leaf's PRM row is its item's
# encoder row (`--tie-leaf`, as SASRec ties its tables); the epoch kept is the best by
# the PRM's exhaustive validation Recall@20, the ceiling the validation-picked wide search
# approaches, the learning rate halved after an epoch without a new best) -> export
# (f32/f16/int8, ids.bin, OUT/bundle*.promise).
# --codes-only: the smallest footprint instead (nothing grows with the catalog but the trie
# and the ids): the codes-only generator and the path-query PRM distilled from SASRec.
# OUT holds the bundles, work/ (checkpoints, split log), curves/ (every learning curve) and
# build.log (progress). --quick: short runs on small data (the pipeline test, about a minute).
# OUT/work/inputs.fingerprint records the inputs (sizes, sha256, split arguments): a build
# resumes only on the same inputs; --force removes what an earlier build wrote and starts over.
# The split rule is `log`'s: --split loo (default: leave-one-out per user, the last item is
# test, the one before validation) or --split files (the log's own time split: --valid and
# --test name the files). Knobs for a real run: SASREC_ARGS, TRAIN_ARGS, PRM_ARGS (appended).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python3}
LOG="" OUT="" QUICK=0 CODES_ONLY=0 FORCE=0 LOGARGS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --log) LOG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --codes-only) CODES_ONLY=1; shift ;;
    --force) FORCE=1; shift ;;
    --split|--valid|--test|--user-col|--item-col|--time-col|--sep) LOGARGS+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n 2,24p "$0"; exit 0 ;;
    *) echo "build: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n $LOG ]] || { echo "build: --log LOG is required" >&2; exit 2; }
[[ -n $OUT ]] || { echo "build: --out DIR is required" >&2; exit 2; }
[[ -f $LOG ]] || { echo "build: --log $LOG: no such file" >&2; exit 2; }
[[ ! -e $OUT || -d $OUT ]] || { echo "build: --out $OUT: is a file, expected a folder" >&2; exit 2; }
W=$OUT/work C=$OUT/curves
# What this folder was built from: every input file's size and sha256, and the split
# arguments. A build resumes only on the same inputs (--force starts over).
fingerprint() {
  local f
  for f in "$LOG" "${LOGARGS[@]}"; do
    if [[ -f $f ]]; then echo "$(stat -c %s "$f") $(sha256sum < "$f" | cut -d' ' -f1)"; else echo "$f"; fi
  done
  echo "codes-only=$CODES_ONLY quick=$QUICK"
}
FP=$(fingerprint)
if [[ $FORCE == 1 && -d $W ]]; then
  # only what a build writes: its work folder, curves, bundles, examples and logs
  rm -rf -- "$W" "$C" "$OUT"/bundle "$OUT"/bundle-f16 "$OUT"/bundle-int8 "$OUT"/bundle*.promise \
    "$OUT"/valid.pairs "$OUT"/test.pairs "$OUT"/sasrec.json "$OUT"/build.log
fi
if [[ -f $W/inputs.fingerprint ]] && [[ $(cat "$W/inputs.fingerprint") != "$FP" ]]; then
  echo "build: $OUT holds a build of other inputs (its $W/inputs.fingerprint differs from $LOG's); use another --out, or --force to start over" >&2
  exit 2
fi
if [[ -d $W && ! -f $W/inputs.fingerprint && -n $(ls -A "$W" 2>/dev/null) ]]; then
  echo "build: $W holds files from a build that recorded no inputs; use another --out, or --force to start over" >&2
  exit 2
fi
mkdir -p "$W" "$C"
[[ -f $W/inputs.fingerprint ]] || echo "$FP" > "$W/inputs.fingerprint"
export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
if [[ $QUICK == 1 ]]; then
  S_ARGS="--max-epochs 4 --patience 2 --max-len 20 --negatives 0 --batch 64"
  T_ARGS="--size small --history 20 --max-epochs 20 --patience 4 --valid-users 200 --batch-targets 256 --lr 0.005"
  D_ARGS="--dense-negatives 64"
  P_ARGS="--steps 40 --eval-every 20 --valid-users 200"
  CODEBOOK=8
else
  S_ARGS="--max-len 50 --negatives 2048 --patience 6 --halve-after 2 --batch 128"
  T_ARGS="--size small --history 50 --patience 4 --valid-users 5000"
  D_ARGS="--dense-negatives 2048 --dense-sampling popularity --dropout 0.2"
  P_ARGS="--valid-users 2000"
  CODEBOOK=256
fi
step() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/build.log"; }
run() { "$PY" -m promise_train "$@" 2>&1 | tee -a "$OUT/build.log"; }
step "log: read, check and split $LOG"
[[ -f $W/log.pkl ]] || run log --log "$LOG" "${LOGARGS[@]}" --out "$W/log.pkl" --pairs "$OUT"
step "sasrec: the teacher and the SID embeddings"
run sasrec --log "$W/log.pkl" --work "$W" --out "$OUT/sasrec.json" --curve "$C/sasrec_curve.jsonl" \
  --metric recall@20 $S_ARGS ${SASREC_ARGS:-}
step "sids: hierarchical k-means over SASRec's item embeddings"
[[ -f $W/sids.npy ]] || run sids --log "$W/log.pkl" --work "$W" --embeddings sasrec --codebook "$CODEBOOK"
if [[ $CODES_ONLY == 1 ]]; then
  step "train: the codes-only generator"
  run train --log "$W/log.pkl" --work "$W" --causal --metric recall@20 --out gen --curve-dir "$C" \
    $T_ARGS ${TRAIN_ARGS:-}
  step "prm-distill: the path-query PRM from the SASRec teacher"
  run prm-distill --log "$W/log.pkl" --work "$W" --gen gen --teacher sasrec_best.pt --out gen_prm \
    --results 20 --curve-dir "$C" $P_ARGS ${PRM_ARGS:-}
  MODEL=gen_prm QUERY=path
else
  step "train: the generator with item rows and the per-prefix PRM, jointly"
  run train --log "$W/log.pkl" --work "$W" --causal --metric head_recall@20 --lr-decay 0.5 --out gen_dense \
    --curve-dir "$C" --item-ids --item-init sasrec_items.npy --dense-aux 1.0 --tie-leaf $T_ARGS $D_ARGS ${TRAIN_ARGS:-}
  MODEL=gen_dense QUERY=node
fi
step "export: the bundles, with the log's item ids"
# again when the model was trained further since (a resumed build with more epochs)
[[ $OUT/bundle-int8.promise -nt $W/$MODEL.pt ]] || run export --work "$W" --model $MODEL --out "$OUT/bundle" --prm-query $QUERY \
  --promise --log "$W/log.pkl" --dataset "$(basename "$LOG")"
step "done: $OUT/bundle-int8.promise (and -f16, f32); evaluate with promise eval --bundle $OUT/bundle-int8.promise --pairs $OUT/valid.pairs"
