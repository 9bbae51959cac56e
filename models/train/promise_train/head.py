"""`head --work W --model NAME --log LOG --split valid|test --out FILE`: the trained dense
PRM's last level alone, every item scored (no beam, the history's items excluded), over
every example of the split: the exhaustive ceiling of the PRM-guided search, in torch (f32
weights; the bundle's int8 rows differ by quantization), counted as the runtime's eval
counts (an unknown target or an empty history is a miss). Writes one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from . import beam as beam_mod
from . import log as log_mod
from .model import load_trained
from .outputs import output
from .trie import Trie


def main(argv=None):
    ap = argparse.ArgumentParser(prog="promise_train head", description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--model", required=True, help="a trained model with a dense PRM (WORK/NAME.pt)")
    ap.add_argument("--log", required=True, help="the split log (WORK/log.pkl)")
    ap.add_argument("--split", required=True, choices=["valid", "test"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, info = load_trained(a.work, a.model)
    model.eval()
    if model.cfg.prm_kind != "dense":
        raise SystemExit(f"{a.model}: prm_kind {model.cfg.prm_kind!r}, the head needs the dense PRM")
    sids = np.load(os.path.join(a.work, info.get("sids", "sids.npy")))
    tables = beam_mod.TrieTables(Trie(sids), model.cfg.cmax)
    pairs = log_mod.restore(a.log).examples(a.split)
    res = beam_mod.guided_recall_ndcg_pairs(model.gen, model.prm, tables, pairs,
                                            torch.from_numpy(sids.astype(np.int64)), guided=False)
    out = {"model": f"{a.model}, torch f32", "split": a.split, "examples": len(pairs),
           **{k[len("head_"):]: v for k, v in res.items()}}
    with output(a.out) as f:
        json.dump(out, f)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
