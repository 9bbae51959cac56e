"""Item embeddings -> Semantic IDs -> WORK/sids.npy, for ML-1M (fetched, counts checked)
or a split log (--log: SASRec's item embeddings only).

python -m promise_train sids --data DATA --work WORK [--levels 3 --codebook 32]
Prints the measurement behind the embedding choice, per-level code usage and the
collision rate before disambiguation.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import data as data_mod
from . import log as log_mod
from . import sids as sid_mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--work", required=True)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook", type=int, default=32)
    ap.add_argument("--embeddings", default="collaborative", choices=["collaborative", "sasrec"],
                    help="sasrec: the trained SASRec's item embeddings (WORK/sasrec_items.npy, "
                         "written by sasrec.py at its plateau)")
    ap.add_argument("--sasrec-items", default="sasrec_items.npy", help="--embeddings sasrec: the file in WORK")
    ap.add_argument("--log", default=None, help="a split log (promise_train log --out) instead of ML-1M")
    ap.add_argument("--out", default="sids.npy", help="file name in WORK")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    train, valid_pairs, n_items = log_mod.training_split(args.data, args.log)
    report = {}
    candidates = []
    if args.embeddings == "sasrec":
        sas = np.load(os.path.join(args.work, args.sasrec_items))
        if len(sas) != n_items:
            raise SystemExit(f"{args.sasrec_items} holds {len(sas)} items, the data {n_items}")
        candidates.append(("sasrec", sas))
    if args.log is None:      # ML-1M: the two alternatives the choice was measured against
        ds = data_mod.load(args.data)
        data_mod.check_counts(ds)
        candidates.append(("collaborative", sid_mod.collaborative_embeddings(train, n_items)))
        years = [0] * n_items  # decade unknown without titles: genres only
        candidates.append(("content (genres)", sid_mod.content_embeddings(ds.genres, years)))
    elif args.embeddings != "sasrec":
        raise SystemExit("--log: SIDs come from SASRec's item embeddings (--embeddings sasrec); the dense "
                         "co-occurrence embedding is for small catalogs only")
    for name, emb in candidates:
        _, rq_coll = sid_mod.disambiguate(sid_mod.residual_kmeans(emb, args.levels, args.codebook))
        codes = sid_mod.hierarchical_kmeans(emb, args.levels, args.codebook)
        agree = sid_mod.level1_agreement(codes, valid_pairs)
        full, coll = sid_mod.make_unique(codes)
        report[name] = {"level1_agreement": agree, "collision_rate": coll,
                        "collision_rate_residual_kmeans": rq_coll,
                        "last_level_codebook": int(full[:, -1].max()) + 1}
        print(f"{name}: level-1 agreement with history {agree:.3f}, collisions before "
              f"disambiguation {coll:.4f} (residual k-means: {rq_coll:.3f}), last-level codebook "
              f"{int(full[:, -1].max()) + 1}")
        if name == args.embeddings:
            chosen = full
            for line in sid_mod.usage_report(full, args.codebook):
                print("  " + line)
            report[name]["usage"] = sid_mod.usage_report(full, args.codebook)
    np.save(os.path.join(args.work, args.out), chosen)
    stem = os.path.splitext(args.out)[0]
    with open(os.path.join(args.work, f"{stem}_report.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
