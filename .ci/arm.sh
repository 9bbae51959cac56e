#!/usr/bin/env bash
# ARM: cross-build for aarch64-unknown-linux-gnu with Debian's cross gcc, run the library's
# unit tests and the C example under qemu-user, and check the ARM shared library's ELF
# (16 KB pages, only promise_* exported). Then `cargo check` for aarch64-linux-android
# (std only; no NDK here, so no link). Needs: gcc-aarch64-linux-gnu libc6-dev-arm64-cross
# binutils-aarch64-linux-gnu qemu-user, rustup targets aarch64-unknown-linux-gnu and
# aarch64-linux-android (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
t=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L $sysroot"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
# the sysroot for every emulated process, children included (a test that re-runs its own
# binary starts it through binfmt_misc, which passes no -L)
export QEMU_LD_PREFIX=$sysroot
# without binfmt_misc an emulated test cannot start a child process of its own: the one test
# that needs one (the panic hook's, src/panic.rs) says so and skips; the host run covers it
export PROMISE_EMULATED=1
dir=target/arm
features=cpu,ffi
# the library's own tests (the fused engine's kernels, the search, the bundle checks, the C
# ABI's unit tests) on an emulated Cortex-A
cargo test --target $t --target-dir $dir --no-default-features --features $features --lib
# the shared library an ARM board or phone loads, and the C example against it
cargo build --target $t --target-dir $dir --no-default-features --features $features --lib
lib=$dir/$t/debug
.ci/elf_check.sh $lib/libpromise_rt.so aarch64-linux-gnu-readelf aarch64-linux-gnu-nm
aarch64-linux-gnu-gcc -std=c99 -Wall -Wextra -Werror -I src/ffi examples/c/feed.c -L $lib -lpromise_rt -o $dir/feed
qemu-aarch64 -L $sysroot -E LD_LIBRARY_PATH="$PWD/$lib" $dir/feed models/ml1m models/ml1m.promise
echo "arm: $t tests and the C example passed under qemu-aarch64"
# Android: the target's std type-checks the library (linking needs the NDK, absent here)
cargo check --target aarch64-linux-android --target-dir $dir --no-default-features --features $features --lib
echo "arm: aarch64-linux-android checks"
