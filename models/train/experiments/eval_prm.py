"""End-to-end check of a PRM checkpoint from train_prm.py before it is exported: the
PRM-guided beam search in torch (batched, many users at once) on the validation split,
Recall@10 / NDCG@10 for a grid of (K', K+, mix). mix = 1 is plain beam search (the
pool's top K' by cumulative log-prob), so every row is compared with plain side by side.

The last level ranks its pool (the top K+ unseen children by cum) by the key and returns
the top 10: the runtime's rule (src/search/mod.rs) up to its full-feed fallback, which
only matters when fewer than 10 unseen leaves are in the pool.

python eval_prm.py --work WORK --gen small_s200 --prm small_s200_prmstatedot4 \
    --prm-heads 4 --prm-head dot --prm-query state --users 2000
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from promise_train import beam as beam_mod  # noqa: E402
from promise_train import data as data_mod  # noqa: E402
from promise_train.model import PRM, enc_table, load_trained  # noqa: E402
from promise_train.prm_attention import PathQuery, StateQuery, score  # noqa: E402
from promise_train.trie import Trie  # noqa: E402


@torch.no_grad()
def search(gen, prm, query, tables, mem, mask, seen, beams, cands, mix, results=10):
    L = gen.cfg.levels
    B = mem.shape[0]
    node = torch.zeros(B, 1, dtype=torch.long)
    cum = torch.zeros(B, 1)
    pre = torch.zeros(B, 1, max(L - 1, 1), dtype=torch.long)
    for level in range(L):
        lp, hs = gen.decode_grouped(mem, mask, pre[:, :, :L - 1], states=True)
        lp, hs = lp[:, :, level, :], hs[:, :, level, :]
        ch = tables.child[node]
        sc = torch.where(ch >= 0, cum[:, :, None] + lp, torch.tensor(-math.inf))
        if level == L - 1:
            items = tables.leaf_item[(ch - tables.leaf0).clamp(min=0)]
            sc = sc.masked_fill(seen.gather(1, items.reshape(B, -1)).reshape(sc.shape), -math.inf)
        sc = sc.reshape(B, -1)
        k = min(cands, sc.shape[1])
        val, top = sc.topk(k, dim=1)
        pool = torch.where(torch.isfinite(val), ch.reshape(B, -1).gather(1, top), -1)
        par = top // lp.shape[2]
        if mix < 1.0:
            if query is None:                              # the dense PRM
                p = prm.score(mem, mask, pool.clamp(min=0))
            else:
                pst = hs.gather(1, par[:, :, None].expand(-1, -1, hs.shape[2]))
                p = score(prm, query, mem, mask, pool.clamp(min=0), pst)
            key = (1.0 - mix) * p + mix * val if mix > 0 else p
        else:
            key = val
        key = key.masked_fill(pool < 0, -math.inf)
        if level == L - 1:
            order = key.topk(min(results, k), dim=1).indices
            return tables.leaf_item[(pool.gather(1, order) - tables.leaf0).clamp(min=0)], \
                pool.gather(1, order) >= 0
        order = key.topk(min(beams, k), dim=1).indices
        node, cum, pre = beam_mod.advance(tables, ch, pre, level, val.gather(1, order), top.gather(1, order),
                                          lp.shape[2])
    raise AssertionError("unreachable")


@torch.no_grad()
def evaluate(gen, prm, query, tables, rows, sids_t, beams, cands, mix, results=10):
    """Recall@N and NDCG@N (N = `results`) of the PRM-guided search over `rows` (history,
    target)."""
    cfg = gen.cfg
    n_items = int(sids_t.shape[0])
    rec, ndcg = 0.0, 0.0
    for b in range(0, len(rows), 256):
        chunk = rows[b:b + 256]
        codes, mask = beam_mod.history_batch([h for h, _ in chunk], cfg.history, enc_table(cfg, sids_t))
        mem = gen.encode(codes, mask)
        seen = torch.zeros(len(chunk), n_items, dtype=torch.bool)
        for i, (h, _) in enumerate(chunk):
            seen[i, torch.as_tensor(np.asarray(h), dtype=torch.long)] = True
        items, ok = search(gen, prm, query, tables, mem, mask, seen, beams, cands, mix, results)
        for i, (_, t) in enumerate(chunk):
            hit = ((items[i] == t) & ok[i]).nonzero()
            if len(hit):
                rec += 1.0
                ndcg += 1.0 / math.log2(int(hit[0, 0]) + 2)
    return rec / len(rows), ndcg / len(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--gen", required=True)
    ap.add_argument("--prm", required=True, help="a train_prm.py run (--out): its checkpoint WORK/<prm>.ckpt")
    ap.add_argument("--prm-heads", type=int, default=4)
    ap.add_argument("--prm-head", default="mlp")
    ap.add_argument("--prm-query", default="path", choices=["path", "state", "dense"],
                    help="dense: a train_dense_prm.py model (WORK/<prm>.pt)")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--users", type=int, default=0, help="the first N users (0 = all)")
    ap.add_argument("--grid", default="4:16,16:64", help="K':K+ pairs")
    ap.add_argument("--mix", default="0,0.5,0.75,0.9,1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, info = load_trained(args.work, args.gen)
    cfg = model.cfg
    gen = model.gen.eval()
    sids = np.load(os.path.join(args.work, info.get("sids", "sids.npy")))
    trie = Trie(sids)
    tables = beam_mod.TrieTables(trie, cfg.cmax)
    if args.prm_query == "dense":
        # train_dense_prm.py's best model (its .pt holds the generator too)
        prm, query = load_trained(args.work, args.prm)[0].prm.eval(), None
    else:
        cfg.prm_heads, cfg.prm_head = args.prm_heads, args.prm_head
        prm = PRM(cfg)
        query = StateQuery(trie, cfg.cmax, cfg.d) if args.prm_query == "state" else PathQuery(trie, cfg.cmax, cfg.d)
        c = torch.load(os.path.join(args.work, f"{args.prm}.ckpt"), weights_only=False)
        prm.load_state_dict(c["prm"])
        query.load_state_dict(c["query"])
        prm.eval()
    ds = data_mod.load(args.data)
    sids_t = torch.from_numpy(sids.astype(np.int64))
    seqs = ds.seqs[:args.users] if args.users else ds.seqs
    if args.split == "valid":
        rows = [(s[:-2], s[-2]) for s in seqs]
    else:
        rows = [(s[:-1], s[-1]) for s in seqs]
    grid = [tuple(int(x) for x in g.split(":")) for g in args.grid.split(",")]
    mixes = [float(x) for x in args.mix.split(",")]
    out = []
    for beams, cands in grid:
        for mix in mixes:
            rec, ndcg = evaluate(gen, prm, query, tables, rows, sids_t, beams, cands, mix)
            row = {"beams": beams, "candidates": cands, "mix": mix, "users": len(rows), "split": args.split,
                   "recall10": round(rec, 4), "ndcg10": round(ndcg, 4)}
            print(json.dumps(row), flush=True)
            out.append(row)
    if args.out:
        with open(args.out, "a") as f:
            for row in out:
                f.write(json.dumps(dict(row, prm=args.prm)) + "\n")


if __name__ == "__main__":
    main()
