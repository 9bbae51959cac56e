"""How much could a verifier with a dense model's knowledge add to the generator's beam?
A measurement, not part of the pipeline (issue 12's "small + PRM >= SASRec" target).

The generator's plain beam (K' beams) proposes its last-level pool (the top K+ unseen
children by cumulative log-prob, as the PRM-guided search does); the pool is re-ranked by
our trained SASRec's score (the strongest model we have: an oracle-like verifier that no
PRM reading the generator's memory can beat without learning what SASRec knows), alone
and mixed with the generator's cum after a per-user z-score. Earlier levels are plain.

python verifier_bound.py --work WORK --gen small_s200 --users 2000
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
from promise_train.model import enc_table, load_trained  # noqa: E402
from promise_train.sasrec import SASRec, pad_left  # noqa: E402
from promise_train.trie import Trie  # noqa: E402


def z(x, valid):
    m = torch.where(valid, x, torch.zeros_like(x))
    n = valid.sum(1, keepdim=True).clamp(min=1)
    mu = m.sum(1, keepdim=True) / n
    sd = (torch.where(valid, (x - mu) ** 2, torch.zeros_like(x)).sum(1, keepdim=True) / n).sqrt().clamp(min=1e-6)
    return (x - mu) / sd


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--gen", required=True)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--grid", default="4:16,16:64,16:256")
    ap.add_argument("--mix", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--verifier", default="sasrec", choices=["sasrec", "probe"],
                    help="probe: probe.py's dense head on the generator's own memory (WORK/probe_<gen>.pt)")
    ap.add_argument("--every-level", action="store_true",
                    help="also select the beams at levels 1..L-1: a prefix's score is the verifier's "
                         "log-sum-exp over the unseen items below it")
    ap.add_argument("--inner-mix", type=float, default=0.5, help="with --every-level: the mix at levels 1..L-1")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, info = load_trained(args.work, args.gen)
    gen, cfg = model.gen.eval(), model.cfg
    ds = data_mod.load(args.data)
    sas = SASRec(ds.n_items)
    sas.load_state_dict(torch.load(os.path.join(args.work, "sasrec_best.pt")))
    sas.eval()
    sids = np.load(os.path.join(args.work, info.get("sids", "sids.npy")))
    trie = Trie(sids)
    tables = beam_mod.TrieTables(trie, cfg.cmax)
    sids_t = torch.from_numpy(sids.astype(np.int64))
    probe = torch.load(os.path.join(args.work, f"probe_{args.gen}.pt")) if args.verifier == "probe" else None
    # anc[item, b] = the trie node of the item's level-(b+1) prefix
    parent = np.zeros(trie.num_nodes, np.int64)
    for node in range(trie.level_start[trie.levels]):
        for c in range(int(trie.first_child[node]), int(trie.first_child[node + 1])):
            parent[c] = node
    anc = np.zeros((sids.shape[0], trie.levels), np.int64)
    for leaf in range(trie.level_start[trie.levels], trie.num_nodes):
        x, item = leaf, int(trie.leaf_item[leaf - trie.level_start[trie.levels]])
        for lv in range(trie.levels - 1, -1, -1):
            anc[item, lv] = x
            x = parent[x]
    anc_t = torch.from_numpy(anc)
    cut = 2 if args.split == "valid" else 1
    rows = [(s[:-cut], s[-cut]) for s in ds.seqs[:args.users]]
    grid = [tuple(int(x) for x in g.split(":")) for g in args.grid.split(",")]
    mixes = [float(x) for x in args.mix.split(",")]
    L = cfg.levels
    acc = {(b, c, m): [0.0, 0.0] for b, c in grid for m in mixes}
    in_pool = {(b, c): 0.0 for b, c in grid}
    for s0 in range(0, len(rows), 256):
        chunk = rows[s0:s0 + 256]
        B = len(chunk)
        codes, mask = beam_mod.history_batch([h for h, _ in chunk], cfg.history, enc_table(cfg, sids_t))
        mem = gen.encode(codes, mask)
        if probe is None:
            x = torch.from_numpy(pad_left([h for h, _ in chunk], 200))
            dense = sas.hidden(x)[:, -1, :] @ sas.item.weight[1:].T               # [B, items]
        else:
            dense = (mem[:, -1] @ probe["W"] + probe["b"]) @ probe["E"].T + probe["eb"]
        seen = torch.zeros(B, sids.shape[0], dtype=torch.bool)
        for i, (h, _) in enumerate(chunk):
            seen[i, torch.as_tensor(np.asarray(h), dtype=torch.long)] = True
        # a prefix's verifier score: log-sum-exp of its unseen items' scores
        top_ = dense.max(1, keepdim=True).values
        e = torch.exp(dense - top_).masked_fill(seen, 0.0)
        node_score = torch.zeros(B, trie.num_nodes)
        for lv in range(L):
            node_score.index_add_(1, anc_t[:, lv], e)
        node_score = torch.log(node_score.clamp(min=1e-30)) + top_
        target = torch.tensor([t for _, t in chunk])
        for beams, cands in grid:
            node = torch.zeros(B, 1, dtype=torch.long)
            cum = torch.zeros(B, 1)
            pre = torch.zeros(B, 1, L - 1, dtype=torch.long)
            for level in range(L):
                lp = gen.decode_grouped(mem, mask, pre)[:, :, level, :]
                ch = tables.child[node]
                sc = torch.where(ch >= 0, cum[:, :, None] + lp, torch.tensor(-math.inf))
                if level == L - 1:
                    items = tables.leaf_item[(ch - tables.leaf0).clamp(min=0)].reshape(B, -1)
                    sc = sc.reshape(B, -1).masked_fill(seen.gather(1, items), -math.inf)
                    k = min(cands, sc.shape[1])
                    val, top = sc.topk(k, dim=1)
                    ok = torch.isfinite(val)
                    pool = items.gather(1, top)
                    in_pool[(beams, cands)] += float(((pool == target[:, None]) & ok).any(1).sum())
                    ds_ = dense.gather(1, pool)
                    for m in mixes:
                        key = (1 - m) * z(ds_, ok) + m * z(val, ok) if 0 < m < 1 else (val if m == 1 else ds_)
                        key = key.masked_fill(~ok, -math.inf)
                        order = key.topk(min(10, k), dim=1).indices
                        res = pool.gather(1, order)
                        good = ok.gather(1, order)
                        for i in range(B):
                            hit = ((res[i] == target[i]) & good[i]).nonzero()
                            if len(hit):
                                acc[(beams, cands, m)][0] += 1
                                acc[(beams, cands, m)][1] += 1 / math.log2(int(hit[0, 0]) + 2)
                    break
                flat = sc.reshape(B, -1)
                if args.every_level:
                    val, top = flat.topk(min(cands, flat.shape[1]), dim=1)
                    ok = torch.isfinite(val)
                    pn = ch.reshape(B, -1).gather(1, top).clamp(min=0)
                    m = args.inner_mix
                    key = (1 - m) * z(node_score.gather(1, pn), ok) + m * z(val, ok)
                    sel = key.masked_fill(~ok, -math.inf).topk(min(beams, top.shape[1]), dim=1).indices
                    val, top = val.gather(1, sel), top.gather(1, sel)
                else:
                    val, top = flat.topk(min(beams, flat.shape[1]), dim=1)
                node, cum, pre = beam_mod.advance(tables, ch, pre, level, val, top, lp.shape[2])
    n = len(rows)
    for (b, c, m), (r, g) in acc.items():
        row = {"gen": args.gen, "verifier": args.verifier,
               "inner_mix": args.inner_mix if args.every_level else None, "split": args.split, "users": n, "beams": b, "candidates": c, "mix": m,
               "true_leaf_in_pool": round(in_pool[(b, c)] / n, 4), "recall10": round(r / n, 4),
               "ndcg10": round(g / n, 4)}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
