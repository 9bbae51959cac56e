#!/usr/bin/env bash
# The JVM jar that carries its native libraries: the classes of bindings/jvm/src and, under
# dev/promisert/native/linux-x86_64 and linux-aarch64, libpromise_rt.so (the C ABI,
# `--no-default-features --features cpu,ffi`) and libpromise_jni.so (the JNI shim, linked
# with an $ORIGIN rpath so it finds libpromise_rt beside itself). Native.java loads a system
# copy when there is one, else these. Writes target/jvm-jar/promise-rt.jar.
#
#   bash bindings/jvm/jar.sh [--test]
#
# --test: then run the binding's test from the jar alone, in a fresh folder, with a clean
# environment (no java.library.path, no LD_LIBRARY_PATH): what a user with only `java` has.
# Needs a JDK, gcc, and for aarch64 gcc-aarch64-linux-gnu and the rustup target (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/../.."
javac_bin=$(command -v javac)
JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$javac_bin")")")}
out=target/jvm-jar
rm -rf "$out" && mkdir -p "$out/classes/dev/promisert/native"
# JAR_PROFILE=debug and JAR_TARGET_DIR=target/arm reuse what .ci/arm.sh built (CI does)
profile=${JAR_PROFILE:-release}
tdir=${JAR_TARGET_DIR:-target/jvm-native}
features=(--no-default-features --features cpu,ffi --lib --profile "${profile/debug/dev}")
# the jar ships stripped libraries (the release profile keeps debug info for profiling)
export CARGO_PROFILE_RELEASE_STRIP=debuginfo
shim() {   # platform cc libdir
  local dest=$out/classes/dev/promisert/native/$1
  mkdir -p "$dest"
  cp "$3/libpromise_rt.so" "$dest/"
  $2 -shared -fPIC -std=c99 -O2 -Wall -Wextra -Werror \
    -I "$JAVA_HOME/include" -I "$JAVA_HOME/include/linux" -I src/ffi \
    bindings/jvm/jni/promise_jni.c -L "$3" -lpromise_rt -Wl,-rpath,'$ORIGIN' -o "$dest/libpromise_jni.so"
}
cargo build "${features[@]}" --target-dir "$tdir"
shim linux-x86_64 "${CC:-cc}" "$tdir/$profile"
t=aarch64-unknown-linux-gnu
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
  cargo build "${features[@]}" --target $t --target-dir "$tdir"
shim linux-aarch64 aarch64-linux-gnu-gcc "$tdir/$t/$profile"
javac -Xlint:all -Werror --release 11 -d "$out/classes" bindings/jvm/src/dev/promisert/*.java
jar --create --file "$out/promise-rt.jar" -C "$out/classes" .
echo "jar: $out/promise-rt.jar ($(stat -c %s "$out/promise-rt.jar") bytes)"
jar --list --file "$out/promise-rt.jar" | grep native/
if [[ "${1:-}" == "--test" ]]; then
  fresh=$(mktemp -d)
  trap 'rm -rf "$fresh"' EXIT
  cp "$out/promise-rt.jar" "$fresh/"
  mkdir "$fresh/test"
  javac -Xlint:all -Werror -cp "$fresh/promise-rt.jar" -d "$fresh/test" bindings/jvm/test/PromiseTest.java
  java_bin=$(readlink -f "$(command -v java)")
  repo=$PWD
  (cd "$fresh" && env -i HOME="$fresh" "$java_bin" -Xcheck:jni -cp "promise-rt.jar:test" dev.promisert.PromiseTest \
     "$repo/models/ml1m" "$repo/models/ml1m.promise")
  echo "jar: the binding's test passed from the jar alone in a fresh folder"
fi
