#!/usr/bin/env bash
# Build the C example against the committed header and the cdylib that
# `cargo build --all-features --all-targets` builds (target/debug), then run it. Without
# --all-targets the dev-dependencies unify other features into tract's dependencies and cargo
# rebuilds tract (minutes on CI).
# --valgrind: run it under valgrind memcheck, failing on any error or any leak.
set -euo pipefail
cd "$(dirname "$0")/../.."
lib=target/debug
cargo build --all-features --all-targets   # what the README command built: nothing to rebuild
out=target/c-example
mkdir -p "$out"
# the header and the library through the promise_rt.pc the build writes beside the library
flags=$(PKG_CONFIG_PATH="$lib" pkg-config --cflags --libs promise_rt)
# shellcheck disable=SC2086
${CC:-cc} -std=c99 -Wall -Wextra -Werror -g examples/c/feed.c $flags -o "$out/feed"
export LD_LIBRARY_PATH="$PWD/$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [[ "${1:-}" == "--valgrind" ]]; then
  valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible \
    --errors-for-leak-kinds=definite,indirect,possible "$out/feed" models/ml1m models/ml1m.promise
else
  "$out/feed" models/ml1m models/ml1m.promise
fi
