#!/usr/bin/env bash
# One piece of a long fuzz campaign: each target named (default: every target) runs for
# SECONDS, coverage-guided, under a sanitizer. Its corpus lives in ROOT/<target> and is kept
# between pieces (seeded from tests/fuzz/corpus/<target> on first use), so pieces run across
# sessions add up. One summary line per target is appended to ROOT/pieces.log: date,
# commit, sanitizer, seconds, runs, coverage edges, features, corpus size, peak RSS, finding.
# A finding (a crash, a leak, an abort, a timeout) is kept under tests/fuzz/artifacts/<target>/.
#
#   bash tests/fuzz/pieces.sh ROOT SECONDS [TARGET...]
#
# Env: SAN (the sanitizer: address, the default, or none for the fast build), TARGET_DIR
# (cargo's target folder; default tests/fuzz/target, or tests/fuzz/target-asan under ASan:
# the first ASan build compiles tract under the sanitizer, 19 min 49 s here with one job).
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`).
set -uo pipefail
ROOT=${1:?usage: pieces.sh ROOT SECONDS [TARGET...]}
SECS=${2:?usage: pieces.sh ROOT SECONDS [TARGET...]}
shift 2
[[ $SECS =~ ^[1-9][0-9]*$ ]] || { echo "pieces.sh: SECONDS must be a positive whole number, not '$SECS'" >&2; exit 2; }
cd "$(dirname "$0")/../.."
SAN=${SAN:-address}
case $SAN in address | none) ;; *) echo "pieces.sh: SAN must be address or none, not '$SAN'" >&2; exit 2 ;; esac
if [[ $SAN == none ]]; then TD=${TARGET_DIR:-tests/fuzz/target}; else TD=${TARGET_DIR:-tests/fuzz/target-asan}; fi
ALL=(catalog onnx_index manifest structured container differential bundle)
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL[@]}")
for t in "${TARGETS[@]}"; do
  [[ " ${ALL[*]} " == *" $t "* ]] || { echo "pieces.sh: no fuzz target '$t' (one of: ${ALL[*]})" >&2; exit 2; }
done
[[ -e $ROOT && ! -d $ROOT ]] && { echo "pieces.sh: ROOT '$ROOT' is not a folder" >&2; exit 2; }
mkdir -p "$ROOT"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
for t in "${TARGETS[@]}"; do
  case $t in
    catalog | onnx_index | manifest) len=4096 ;;
    container) len=256 ;;
    *) len=64 ;;
  esac
  c=$ROOT/$t
  if [[ ! -d $c ]]; then
    mkdir -p "$c"
    cp tests/fuzz/corpus/"$t"/* "$c"/ 2>/dev/null || true
  fi
  mkdir -p tests/fuzz/artifacts/"$t"
  log=$ROOT/$t.last.log
  cargo +nightly fuzz run --fuzz-dir tests/fuzz -s "$SAN" --target-dir "$TD" "$t" "$c" -- \
    -max_total_time="$SECS" -max_len="$len" -len_control=0 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*$')
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*$')
  corp=$(find "$c" -type f | wc -l)
  finding=none
  if [[ $rc -ne 0 ]]; then
    finding=$(grep -m1 -oE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer): [a-z-]+|panicked at [^ ]+' "$log" || true)
    finding="rc $rc ${finding:-see $log}; $(grep -m1 -o "Test unit written to [^ ]*" "$log" || true)"
  fi
  line="$(date -u +%F\ %H:%M) $commit san=$SAN target=$t secs=$SECS runs=${runs:-?} cov=${cov:-?} ft=${ft:-?} corpus=$corp rss_mb=${rss:-?} finding=$finding"
  echo "$line" | tee -a "$ROOT/pieces.log"
done
