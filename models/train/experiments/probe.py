"""Does the generator's encoder memory know what SASRec knows? A measurement for issue 12,
not part of the pipeline.

The frozen generator encodes every training chunk (causal: row p has read items <= p);
a dense probe on top, u = mem_p @ W + b, score(item) = <u, E_item> + bias_item, is trained
with SASRec's objective (full softmax over all items, every position, every epoch) and
then ranks the whole catalogue on the validation split (compare: SASRec, the
generator's beam). Its weights go to WORK/probe_<gen>.pt: `verifier_bound.py --verifier
probe` re-ranks the generator's pools with it, as it does with SASRec. The shipped dense
PRM (train_dense_prm.py) grew out of this probe: the same head with a table per level.

python probe.py --work WORK --gen small_s200 --epochs 6
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from promise_train import beam as beam_mod  # noqa: E402
from promise_train.prm_dense import chunks, encode_all, load_frozen  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--gen", required=True)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    _model, _info, gen, cfg, ds, sids, sids_t = load_frozen(args.work, args.gen, args.data)
    H, d, n_items = cfg.history, cfg.d, sids.shape[0]
    t0 = time.time()
    mem, tgt = encode_all(gen, chunks(ds.seqs, H), H, sids_t)
    print(f"encoded {len(tgt)} positions in {time.time() - t0:.0f} s", flush=True)
    W = torch.nn.Parameter(torch.eye(d))
    b = torch.nn.Parameter(torch.zeros(d))
    E = torch.nn.Parameter(torch.randn(n_items, d) * 0.05)
    eb = torch.nn.Parameter(torch.zeros(n_items))
    opt = torch.optim.Adam([W, b, E, eb], lr=2e-3)
    rows = [(s[:-2], s[-2]) for s in ds.seqs]

    @torch.no_grad()
    def full_rank(users):
        rec = ndcg = 0.0
        for s0 in range(0, users, 256):
            part = rows[s0:s0 + 256]
            codes, mask = beam_mod.history_batch([h for h, _ in part], H, sids_t)
            u = gen.encode(codes, mask)[:, -1] @ W + b
            sc = u @ E.T + eb
            for i, (h, t) in enumerate(part):
                sc[i, torch.as_tensor(np.asarray(h), dtype=torch.long)] = -math.inf
                r = int((sc[i] > sc[i, t]).sum())
                if r < 10:
                    rec += 1
                    ndcg += 1 / math.log2(r + 2)
        return round(rec / users, 4), round(ndcg / users, 4)

    log = []
    for ep in range(args.epochs):
        t0 = time.time()
        perm = torch.randperm(len(tgt))
        tot = 0.0
        for s0 in range(0, len(perm), 1024):
            i = perm[s0:s0 + 1024]
            u = mem[i] @ W + b
            loss = F.cross_entropy(u @ E.T + eb, tgt[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(i)
        r = full_rank(len(rows))
        row = {"epoch": ep + 1, "loss": round(tot / len(tgt), 4), "valid_full_recall10": r[0], "valid_full_ndcg10": r[1],
               "seconds": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        log.append(row)

    torch.save({"W": W.detach(), "b": b.detach(), "E": E.detach(), "eb": eb.detach()},
               os.path.join(args.work, f"probe_{args.gen}.pt"))      # verifier_bound.py --verifier probe
    if args.out:
        with open(args.out, "a") as f:
            for row in log:
                f.write(json.dumps(dict(row, gen=args.gen)) + "\n")


if __name__ == "__main__":
    main()
