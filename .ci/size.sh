#!/usr/bin/env bash
# The stripped shared library's size, the figure an app's download grows by.
#   .ci/size.sh           the CPU-only library (fused engine + C ABI: what a mobile app
#                         links); fails when it is over the budget in .ci/size_budget
#   .ci/size.sh --all     also the library with tract, and with tract + GPU (no budget)
set -euo pipefail
cd "$(dirname "$0")/.."
budget=$(grep -v '^#' .ci/size_budget | head -1)
measure() { # name features
  local name=$1 features=$2 dir=target/size
  # one target dir for every feature set: dependencies built alike are shared
  cargo build --release --lib --no-default-features --features "$features" --target-dir "$dir" -q
  strip --strip-all -o "$dir/libpromise_rt.$name.so" "$dir/release/libpromise_rt.so"
  local bytes
  bytes=$(stat -c %s "$dir/libpromise_rt.$name.so")
  printf '%-16s %-20s %9d bytes  %6.2f MiB\n' "$name" "$features" "$bytes" "$(echo "$bytes / 1048576" | bc -l)" >&2
  echo "$bytes"
}
out=$(measure cpu "cpu,ffi")
if [[ "${1:-}" == "--all" ]]; then
  measure cpu-tract "cpu,tract,ffi" >/dev/null
  measure cpu-tract-gpu "cpu,tract,gpu,ffi" >/dev/null
fi
if (( out > budget )); then
  echo "size: the CPU-only library is $out bytes, over the budget of $budget bytes (.ci/size_budget)" >&2
  exit 1
fi
echo "size: the CPU-only library is $out bytes, within the budget of $budget bytes"
