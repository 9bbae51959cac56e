"""Fetch ML-1M, check counts, build item embeddings and Semantic IDs -> WORK/sids.npy.

python prepare.py --data DATA --work WORK [--levels 3 --codebook 32]
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
    ap.add_argument("--out", default="sids.npy", help="file name in WORK")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    ds = data_mod.load(args.data)
    data_mod.check_counts(ds)
    train = [s[:-2] for s in ds.seqs]
    collab = sid_mod.collaborative_embeddings(train, ds.n_items)
    years = [0] * ds.n_items  # decade unknown without titles: genres only
    content = sid_mod.content_embeddings(ds.genres, years)
    report = {}
    candidates = [("collaborative", collab), ("content (genres)", content)]
    if args.embeddings == "sasrec":
        sas = np.load(os.path.join(args.work, "sasrec_items.npy"))
        candidates.insert(0, ("sasrec", sas))
    for name, emb in candidates:
        _, rq_coll = sid_mod.disambiguate(sid_mod.residual_kmeans(emb, args.levels, args.codebook))
        codes = sid_mod.hierarchical_kmeans(emb, args.levels, args.codebook)
        agree = sid_mod.level1_agreement(codes, ds.seqs)
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
