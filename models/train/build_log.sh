#!/usr/bin/env bash
# Any interaction log to a bundle that speaks the app's item ids, in one resumable command:
#
#   python -m promise_train build --log LOG --out OUT [--split loo|files --valid V --test T]
#                                 [--user-col C --item-col C --time-col C] [--quick]
#
# Steps (each checkpoints and returns at once when finished, so running the same command
# again after an interruption continues where it stopped): log (read, check, split) ->
# sasrec (the teacher, and the item embeddings the SIDs come from) -> sids -> train (the
# codes-only generator: nothing in it grows with the catalog) -> prm-distill (the path-query
# PRM, distilled from SASRec) -> export (f32/f16/int8, ids.bin, OUT/bundle*.promise).
# OUT holds the bundles, work/ (checkpoints, split log), curves/ (every learning curve) and
# build.log (progress). --quick: short runs on small data (the pipeline test, about a minute).
# The split rule is `log`'s: --split loo (default: leave-one-out per user, the last item is
# test, the one before validation) or --split files (the log's own time split: --valid and
# --test name the files). Knobs for a real run: SASREC_ARGS, TRAIN_ARGS, PRM_ARGS (appended).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python3}
LOG="" OUT="" QUICK=0 LOGARGS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --log) LOG=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --split|--valid|--test|--user-col|--item-col|--time-col|--sep) LOGARGS+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "build: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n $LOG ]] || { echo "build: --log LOG is required" >&2; exit 2; }
[[ -n $OUT ]] || { echo "build: --out DIR is required" >&2; exit 2; }
[[ -f $LOG ]] || { echo "build: --log $LOG: no such file" >&2; exit 2; }
W=$OUT/work C=$OUT/curves
mkdir -p "$W" "$C"
export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
if [[ $QUICK == 1 ]]; then
  S_ARGS="--max-epochs 4 --patience 2 --max-len 20 --negatives 0 --batch 64"
  T_ARGS="--size small --history 20 --max-epochs 20 --patience 4 --valid-users 200 --batch-targets 256 --lr 0.005"
  P_ARGS="--steps 40 --eval-every 20 --valid-users 200"
  CODEBOOK=8
else
  S_ARGS="--max-len 50 --negatives 2048 --patience 6 --halve-after 2 --batch 128"
  T_ARGS="--size small --history 50 --patience 4 --valid-users 5000"
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
step "train: the codes-only generator"
run train --log "$W/log.pkl" --work "$W" --causal --metric recall@20 --out gen --curve-dir "$C" \
  $T_ARGS ${TRAIN_ARGS:-}
step "prm-distill: the path-query PRM from the SASRec teacher"
run prm-distill --log "$W/log.pkl" --work "$W" --gen gen --teacher sasrec_best.pt --out gen_prm \
  --results 20 --curve-dir "$C" $P_ARGS ${PRM_ARGS:-}
step "export: the bundles, with the log's item ids"
[[ -f $OUT/bundle-int8.promise ]] || run export --work "$W" --model gen_prm --out "$OUT/bundle" --prm-query path --promise \
  --log "$W/log.pkl" --dataset "$(basename "$LOG")"
step "done: $OUT/bundle-int8.promise (and -f16, f32); evaluate with promise eval --bundle $OUT/bundle-int8.promise --pairs $OUT/valid.pairs"
