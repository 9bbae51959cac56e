"""promise_train: the pipeline that makes promise-rt's bundles.

One CLI, `python -m promise_train <command> [args]` (run from models/train, or with
models/train on PYTHONPATH); `python -m promise_train --help` lists the commands. Each
command is one module of this package with its own `--help`.
"""
