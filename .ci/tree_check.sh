#!/usr/bin/env bash
# The tree stays lean: no tracked file over 10 MB outside the shipped bundles (models/<bundle>/
# and models/*.promise), and no word of "session" used as a name for a measurement
# (a measurement is named by its date, commit or bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((10 * 1024 * 1024))
fail=0
while IFS= read -r -d '' f; do
  [[ -f "$f" ]] || continue
  case "$f" in
    models/train/*) ;;                      # the pipeline and its checkpoints are no bundle
    models/*/*|models/*.promise) continue ;; # a shipped bundle's files
  esac
  size=$(stat -c %s "$f")
  if (( size > limit )); then
    echo "tree: $f is $size bytes, over the 10 MB limit for files outside models/ bundles" >&2
    fail=1
  fi
done < <(git ls-files -z)
# the word "session" followed by a run number is a run label, not a date or commit: history
# belongs to dated logs
if git grep -n -I -i -E '\bsessions?[-_ ]?[0-9]{1,2}\b|results/session' -- ':!.ci/tree_check.sh' >/tmp/tree_sessions.txt; then
  echo "tree: measurements named by session (name them by date, commit or bundle):" >&2
  head -20 /tmp/tree_sessions.txt >&2
  fail=1
fi
(( fail == 0 )) && echo "tree: no file over 10 MB outside models/ bundles; no measurement named by session"
exit $fail
