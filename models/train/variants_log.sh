#!/usr/bin/env bash
# Recipe variants of the per-prefix verifier side by side, on validation only: each trained
# model's PRM alone over every item (the ceiling the validation-picked wide search reaches)
# on the full validation split, beside its training record. Test is not read here: only the
# variant that ships is evaluated on test (results_log.sh).
#
#   bash models/train/variants_log.sh DEST LABEL=WORK/MODEL [LABEL=WORK/MODEL ...]
#
# WORK/MODEL names a model trained by `train` (WORK/MODEL.json and .pt, WORK/log.pkl); its
# full-validation ceiling is computed once (`head`, kept as WORK/head_valid_MODEL.json) and
# its curve copied from the folder beside WORK (../curves/MODEL_curve.jsonl). Writes
# DEST/variants.jsonl and DEST/variants.md. Env: PY (python3); SASREC=FILE (a `sasrec` result,
# e.g. the build's sasrec.json) adds its validation Recall@20 as the reference row.
set -euo pipefail
DEST=${1:?usage: variants_log.sh DEST LABEL=WORK/MODEL ...}
shift
(( $# > 0 )) || { echo "variants_log.sh: no LABEL=WORK/MODEL given" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PY:-python3}
export PYTHONPATH=$HERE${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$DEST/curves"
# outputs go to fresh temporary files in DEST, renamed into place (never through a link)
rows=$(mktemp "$DEST/.variants.jsonl.XXXXXX")
table=$(mktemp "$DEST/.variants.md.XXXXXX")
trap 'rm -f "$rows" "$table"' EXIT
for arg in "$@"; do
  [[ $arg == *=*/* ]] || { echo "variants_log.sh: $arg is not LABEL=WORK/MODEL" >&2; exit 2; }
  label=${arg%%=*} path=${arg#*=}
  [[ $label =~ ^[A-Za-z0-9._-]+$ && $label != .* ]] || {
    echo "variants_log.sh: label '$label' must be letters, digits, '.', '_' or '-' (it names a file)" >&2; exit 2; }
  work=$(dirname "$path") model=$(basename "$path")
  [[ -f $work/$model.json && -f $work/$model.pt ]] || { echo "variants_log.sh: no trained model $work/$model.{json,pt}" >&2; exit 2; }
  head=$work/head_valid_$model.json
  [[ -f $head ]] || "$PY" -m promise_train head --work "$work" --model "$model" --log "$work/log.pkl" \
    --split valid --out "$head"
  curve=$(dirname "$work")/curves/${model}_curve.jsonl
  [[ -f $curve ]] && cp --remove-destination "$curve" "$DEST/curves/${label}_curve.jsonl"
  "$PY" - "$label" "$work/$model.json" "$head" >> "$rows" <<'EOF'
import json, sys
label, info, head = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
print(json.dumps({"variant": label, "tie_leaf": bool(info.get("tie_leaf")), "freeze_gen": info.get("freeze_gen"),
                  "dense_aux": info.get("dense_aux"), "epochs": info["epochs"], "best_epoch": info["best_epoch"],
                  "train_seconds": round(info["train_seconds"]), "params_generator": info["params_generator"],
                  "params_prm": info["params_prm"],
                  "valid_sample_head_recall@20": info.get("valid_head_recall@20"),
                  "valid": {k: head[k] for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")},
                  "valid_examples": head["examples"]}))
EOF
done
"$PY" - "$rows" "${SASREC:-}" > "$table" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sasrec = json.load(open(sys.argv[2])) if sys.argv[2] else None
print(f"Recipe variants of the per-prefix PRM: the PRM alone over every item on the full validation split "
      f"({rows[0]['valid_examples']:,} examples; test not read). Written by models/train/variants_log.sh.\n")
print("| variant | leaf rows | generator | best epoch / epochs | train s | valid R@10 | N@10 | R@20 | N@20 |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    v = r["valid"]
    gen = f"frozen ({r['freeze_gen']})" if r["freeze_gen"] else "joint"
    leaf = "tied to the item rows" if r["tie_leaf"] else "own"
    print(f"| {r['variant']} | {leaf} | {gen} | {r['best_epoch']} / {r['epochs']} | {r['train_seconds']:,} | "
          f"{v['recall@10']:.4f} | {v['ndcg@10']:.4f} | {v['recall@20']:.4f} | {v['ndcg@20']:.4f} |")
if sasrec:
    print(f"| SASRec (reference; its best epoch {sasrec['best_epoch']}) | | | | | | | "
          f"{sasrec['valid_recall@20']:.4f} | |")
EOF
chmod 644 "$rows" "$table"
mv -f "$rows" "$DEST/variants.jsonl"
mv -f "$table" "$DEST/variants.md"
cat "$DEST/variants.md"
