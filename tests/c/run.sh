#!/usr/bin/env bash
# Build the C example against the committed header and the release cdylib, then run it.
# --valgrind: run it under valgrind memcheck, failing on any error or leak.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --features ffi --lib
out=target/c-example
mkdir -p "$out"
cc -std=c99 -Wall -Wextra -Werror -I src/ffi examples/c/feed.c -L target/release -lpromise_rt -o "$out/feed"
export LD_LIBRARY_PATH="$PWD/target/release${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [[ "${1:-}" == "--valgrind" ]]; then
  valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible \
    --errors-for-leak-kinds=definite,indirect,possible "$out/feed" models/ml1m
else
  "$out/feed" models/ml1m
fi
