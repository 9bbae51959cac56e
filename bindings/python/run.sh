#!/usr/bin/env bash
# Build the Python wheel (maturin, abi3), install it in a fresh venv, run its pytest suite.
# usage: bindings/python/run.sh   (from anywhere; CI runs it)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/python-venv"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q -r "$here/requirements-test.txt"
export CARGO_TARGET_DIR="$repo/target/python"
rm -rf "$CARGO_TARGET_DIR/wheels"
"$venv/bin/maturin" build --release --manifest-path "$here/Cargo.toml" --out "$CARGO_TARGET_DIR/wheels" --quiet
"$venv/bin/pip" install -q "$CARGO_TARGET_DIR"/wheels/promise_rt-*.whl
cd "$here"
"$venv/bin/python" -m pytest -q tests
# the stubs: a user's program type-checks against the installed wheel
"$venv/bin/python" -m mypy --strict tests/typed_example.py
