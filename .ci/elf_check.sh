#!/usr/bin/env bash
# Check what an app store and an app's linker see in a built shared library:
#   1. every LOAD segment is aligned to at least 16 KB (Android 15+ on Google Play);
#   2. the dynamic symbol table defines only the C ABI (promise_*).
# usage: .ci/elf_check.sh LIB.so [READELF] [NM]
set -euo pipefail
lib=${1:?usage: elf_check.sh LIB.so [READELF] [NM]}
readelf=${2:-readelf}
nm=${3:-nm}
[[ -f "$lib" ]] || { echo "elf_check: no such file: $lib" >&2; exit 1; }
fail=0
# LOAD lines: Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align (Flg may be 1-3 words)
aligns=$("$readelf" -lW "$lib" | awk '$1 == "LOAD" {print $NF}')
[[ -n "$aligns" ]] || { echo "elf_check: $lib has no LOAD segment" >&2; exit 1; }
for a in $aligns; do
  if (( a < 0x4000 )); then
    echo "elf_check: $lib has a LOAD segment aligned to $a, below 0x4000 (16 KB pages)" >&2
    fail=1
  fi
done
echo "elf_check: LOAD alignments of $(basename "$lib"): $(echo $aligns | tr '\n' ' ')"
# defined dynamic symbols: 'ADDR TYPE NAME' lines; anything not promise_* is a leak
others=$("$nm" -D --defined-only "$lib" | awk 'NF >= 3 {print $3}' | grep -v '^promise_' || true)
count=$("$nm" -D --defined-only "$lib" | awk 'NF >= 3 {print $3}' | grep -c '^promise_' || true)
if (( count == 0 )); then
  echo "elf_check: $lib exports no promise_* symbol (built without the ffi feature?)" >&2
  fail=1
fi
if [[ -n "$others" ]]; then
  echo "elf_check: $lib exports symbols outside the C ABI:" >&2
  echo "$others" | head -20 >&2
  fail=1
fi
echo "elf_check: $(basename "$lib") exports $count promise_* symbols and nothing else"
exit $fail
