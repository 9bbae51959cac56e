#!/usr/bin/env bash
# Build the JVM binding (Java classes + the JNI shim in C) against the cdylib that
# `cargo build --all-features` builds (target/debug) and run its test on the desktop JVM.
# Arguments: an optional bundle with ids (see PromiseTest) for the id calls.
# Needs a JDK (Debian: openjdk-17-jdk-headless) and a C compiler.
set -euo pipefail
cd "$(dirname "$0")/../.."
lib=target/debug
[[ -f "$lib/libpromise_rt.so" ]] || cargo build --all-features --all-targets
javac_bin=$(command -v javac)
JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$javac_bin")")")}
out=target/jvm
rm -rf "$out" && mkdir -p "$out/classes"
javac -Xlint:all -Werror -d "$out/classes" bindings/jvm/src/dev/promisert/*.java bindings/jvm/test/PromiseTest.java
${CC:-cc} -shared -fPIC -std=c99 -Wall -Wextra -Werror \
  -I "$JAVA_HOME/include" -I "$JAVA_HOME/include/linux" -I src/ffi \
  bindings/jvm/jni/promise_jni.c -L "$lib" -lpromise_rt -Wl,-rpath,"$PWD/$lib" \
  -o "$out/libpromise_jni.so"
java -Xcheck:jni -Djava.library.path="$out:$lib" -cp "$out/classes" dev.promisert.PromiseTest \
  models/ml1m models/ml1m.promise "$@"
