"""The PRM, trained on what the search asks of it (issue 12): the generator is frozen; for
each training window the generator's own beam search (plain, K' beams, by cumulative
log-prob) proposes at every level the K+ candidate prefixes the runtime would score, and
the PRM learns a listwise softmax over that pool with the target's prefix as the positive.
Pools that miss the target's prefix are skipped (forcing it in teaches the PRM to demote
the generator's favourites: measured, models/train/README.md). The PRM never sees the
generator's log-probs; `mix` in the runtime is where the two meet.

The node query is compositional: the sum of per-level code embeddings along the node's
path plus a depth embedding, so a rare leaf shares what its prefix learned. At export it is
folded into `prm.node_emb` (one row per trie node), so the runtime is unchanged.

Validation after each epoch, per level on the first --valid-users users of the validation
split: how often the true prefix survives into the top K' (by the PRM alone vs by the
generator's cum), and the PRM's MRR of the true prefix within the pool.

Resumable like train.py: WORK/<out>.ckpt, curve models/results/<out>_curve.jsonl.
python train_prm.py --work WORK --data DATA --gen small_h50 --out small_h50_prm
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
import torch.nn as nn
import torch.nn.functional as F

from . import beam as beam_mod
from . import data as data_mod
from .model import load_trained
from .train import Windows
from .trie import Trie


class PathQuery(nn.Module):
    """Node query = sum of the path's per-level code embeddings + a depth embedding."""

    def __init__(self, trie, cmax, d):
        super().__init__()
        L = trie.levels
        self.code = nn.Parameter(torch.randn(L * cmax, d) * 0.1)
        self.depth = nn.Parameter(torch.randn(L + 1, d) * 0.1)
        # path[n, l] = code index (l * cmax + code) of node n's level-l ancestor, or -1
        n = trie.num_nodes
        path = np.full((n, L), -1, np.int64)
        depth = trie.depth.astype(np.int64)
        parent = np.zeros(n, np.int64)
        for node in range(trie.level_start[L]):
            for c in range(int(trie.first_child[node]), int(trie.first_child[node + 1])):
                parent[c] = node
        for node in range(1, n):
            x = node
            while x != 0:
                lv = int(depth[x]) - 1
                path[node, lv] = lv * cmax + int(trie.node_code[x])
                x = int(parent[x])
        self.register_buffer("path", torch.from_numpy(path), persistent=False)
        self.register_buffer("node_depth", torch.from_numpy(depth), persistent=False)

    def forward(self, nodes):
        p = self.path[nodes]                                   # [..., L]
        e = self.code[p.clamp(min=0)] * (p >= 0).unsqueeze(-1)
        return e.sum(-2) + self.depth[self.node_depth[nodes]]

    def table(self):
        return self.forward(torch.arange(self.path.shape[0]))


class StateQuery(nn.Module):
    """Node query = the generator decoder's state at the node's parent (the row that scores
    the node's code), projected, + the node's own code embedding at its level + a depth
    embedding: the PRM starts from what the generator knows about the prefix."""

    def __init__(self, trie, cmax, d):
        super().__init__()
        L = trie.levels
        self.cmax = cmax
        self.code = nn.Parameter(torch.randn(L * cmax, d) * 0.1)
        self.depth = nn.Parameter(torch.randn(L + 1, d) * 0.1)
        self.w_state = nn.Parameter(torch.eye(d))
        self.register_buffer("node_code", torch.from_numpy(np.minimum(trie.node_code.astype(np.int64), cmax - 1)),
                             persistent=False)                    # the root's code is a sentinel
        self.register_buffer("node_depth", torch.from_numpy(trie.depth.astype(np.int64)), persistent=False)

    def forward(self, nodes, state):
        dep = self.node_depth[nodes]
        return state @ self.w_state + self.code[(dep - 1).clamp(min=0) * self.cmax + self.node_code[nodes]] \
            + self.depth[dep]


def score(prm, query, mem, mask, nodes, state=None):
    """The runtime's PRM (model.PRM) with the compositional query in place of node_emb."""
    if isinstance(query, StateQuery):
        return prm.score_query(mem, mask, query(nodes, state))
    return prm.score_query(mem, mask, query(nodes))


@torch.no_grad()
def pools(gen, tables, mem, mask, beams, cands):
    """The plain search's candidate pools: per level (nodes [B,K+] or -1, cums [B,K+])."""
    L = gen.cfg.levels
    B = mem.shape[0]
    node = torch.zeros(B, 1, dtype=torch.long)
    cum = torch.zeros(B, 1)
    pre = torch.zeros(B, 1, max(L - 1, 1), dtype=torch.long)
    out = []
    for level in range(L):
        lp, hs = gen.decode_grouped(mem, mask, pre[:, :, :L - 1], states=True)
        lp, hs = lp[:, :, level, :], hs[:, :, level, :]                         # [B,K,C], [B,K,d]
        ch = tables.child[node]
        sc = torch.where(ch >= 0, cum[:, :, None] + lp, torch.tensor(-math.inf)).reshape(B, -1)
        k = min(cands, sc.shape[1])
        val, top = sc.topk(k, dim=1)
        pool = torch.where(torch.isfinite(val), ch.reshape(B, -1).gather(1, top), -1)
        par = top // lp.shape[2]
        out.append((pool, val, par, hs.gather(1, par[:, :, None].expand(-1, -1, hs.shape[2]))))
        if level == L - 1:
            break
        kb = min(beams, k)
        parent = top[:, :kb] // lp.shape[2]
        node = pool[:, :kb]
        cum = val[:, :kb]
        pre = pre.gather(1, parent[:, :, None].expand(-1, -1, pre.shape[2])).clone()
        alive = node >= 0
        node = node.clamp(min=0)
        pre[:, :, level] = torch.where(alive, tables.code[node], 0)
        cum = torch.where(alive, cum, torch.tensor(-math.inf))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--gen", required=True, help="the trained generator (train.py --out)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--beams", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-epochs", type=int, default=20)
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--windows", type=int, default=0, help="windows per epoch (0 = all)")
    ap.add_argument("--valid-users", type=int, default=1000)
    ap.add_argument("--minutes", type=float, default=150)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prm-heads", type=int, default=0,
                    help="a fresh PRM with this many heads of the generator's head_dim (0: as trained "
                         "with the generator, heads/4 = one 16-dim head for the small model)")
    ap.add_argument("--prm-query", default="path", choices=["path", "state"],
                    help="the node query: its path's code embeddings, or the generator decoder's state at its parent")
    ap.add_argument("--init-from-head", action="store_true",
                    help="start the code embeddings from the generator's output head")
    ap.add_argument("--prm-head", default="mlp", choices=["mlp", "dot"],
                    help="the PRM's output (with --prm-heads): the MLP alone, or with a bilinear query term")
    ap.add_argument("--lr-decay", type=float, default=1.0,
                    help="multiply the learning rate by this after an epoch without a new best (1 = off)")
    ap.add_argument("--curve-dir", default="models/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, info = load_trained(args.work, args.gen)
    if args.prm_heads:
        from .model import PRM
        model.cfg.prm_heads = args.prm_heads
        model.cfg.prm_head = args.prm_head
        model.prm = PRM(model.cfg)
        info = dict(info, config=model.cfg.to_dict(), params_prm=sum(p.numel() for p in model.prm.parameters()))
    gen, prm = model.gen.eval(), model.prm
    for p in gen.parameters():
        p.requires_grad_(False)
    cfg = model.cfg
    ds = data_mod.load(args.data)
    sids = np.load(os.path.join(args.work, info.get("sids", "sids.npy")))
    trie = Trie(sids)
    tables = beam_mod.TrieTables(trie, cfg.cmax)
    query = StateQuery(trie, cfg.cmax, cfg.d) if args.prm_query == "state" else PathQuery(trie, cfg.cmax, cfg.d)
    if args.init_from_head:
        # a code's embedding starts as the generator's output row for it: <state, code> is
        # then the generator's own logit for the child, the PRM's starting point
        with torch.no_grad():
            query.code.copy_(gen.head.detach().transpose(1, 2).reshape(-1, cfg.d))
    params = [p for n, p in prm.named_parameters() if n != "node_emb"] + list(query.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sids_t = torch.from_numpy(sids.astype(np.int64))
    path_t = torch.from_numpy(trie.path)
    win = Windows(ds.seqs, cfg.history)
    ckpt = os.path.join(args.work, f"{args.out}.ckpt")
    curve = os.path.join(args.curve_dir, f"{args.out}_curve.jsonl")
    st = {"epoch": 0, "pos": 0, "best": -1.0, "best_epoch": 0, "train_seconds": 0.0}
    if os.path.exists(ckpt):
        c = torch.load(ckpt, weights_only=False)
        prm.load_state_dict(c["prm"])
        query.load_state_dict(c["query"])
        opt.load_state_dict(c["opt"])
        st = c["state"]
        print(f"resumed: epoch {st['epoch']} window {st['pos']}", flush=True)
    elif os.path.exists(curve):
        os.remove(curve)

    def save():
        torch.save({"prm": prm.state_dict(), "query": query.state_dict(), "opt": opt.state_dict(), "state": st},
                   ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)

    @torch.no_grad()
    def validate():
        rows = [(s[:-2], s[-2]) for s in ds.seqs[:args.valid_users]]
        L = cfg.levels
        kept_prm, kept_gen, mrr, n_in = np.zeros(L), np.zeros(L), np.zeros(L), np.zeros(L)
        for b in range(0, len(rows), 128):
            chunk = rows[b:b + 128]
            codes, mask = beam_mod.history_batch([h for h, _ in chunk], cfg.history, sids_t)
            mem = gen.encode(codes, mask)
            true = path_t[torch.tensor([t for _, t in chunk])]
            for level, (pool, cum, _, pst) in enumerate(pools(gen, tables, mem, mask, args.beams, args.candidates)):
                s = score(prm, query, mem, mask, pool.clamp(min=0), pst).masked_fill(pool < 0, -math.inf)
                hit = pool == true[:, level:level + 1]
                has = hit.any(1)
                kb = min(args.beams, pool.shape[1]) if level < L - 1 else 10
                def rank(x):
                    # entries ranked above the true prefix (rows without it: none)
                    t = torch.where(hit, x, torch.zeros_like(x)).sum(1, keepdim=True)
                    t = torch.where(has[:, None], t, torch.tensor(math.inf))
                    return (x > t).sum(1)
                rank_prm, rank_gen = rank(s), rank(cum)
                kept_prm[level] += float(((rank_prm < kb) & has).sum())
                kept_gen[level] += float(((rank_gen < kb) & has).sum())
                mrr[level] += float((1.0 / (rank_prm + 1).float() * has).sum())
                n_in[level] += float(has.sum())
        n = len(rows)
        return {"prm_keeps_true": (kept_prm / n).round(4).tolist(), "gen_keeps_true": (kept_gen / n).round(4).tolist(),
                "true_in_pool": (n_in / n).round(4).tolist(), "prm_mrr_in_pool": (mrr / np.maximum(n_in, 1)).round(4).tolist()}

    t_run = time.time()
    while st["epoch"] < args.max_epochs and (st["epoch"] == 0 or st["epoch"] - st["best_epoch"] < args.patience):
        if time.time() - t_run > args.minutes * 60:
            save()
            print("out of time: run again to resume", flush=True)
            return
        rng = np.random.default_rng(1000 + st["epoch"])
        perm = rng.permutation(len(win))
        if args.windows:
            perm = perm[:args.windows]
        t0 = time.time()
        tot, used, steps = 0.0, 0, 0
        while st["pos"] < len(perm) and time.time() - t_run < args.minutes * 60:
            idx = perm[st["pos"]:st["pos"] + args.batch]
            hist, mask_np, target = win.batch(idx)
            mask = torch.from_numpy(mask_np)
            with torch.no_grad():
                mem = gen.encode(sids_t[torch.from_numpy(hist)], mask)
            true = path_t[torch.from_numpy(target)]
            loss = 0.0
            for level, (pool, _cum, _, pst) in enumerate(pools(gen, tables, mem, mask, args.beams, args.candidates)):
                hit = pool == true[:, level:level + 1]
                rows = hit.any(1)
                if not rows.any():
                    continue
                s = score(prm, query, mem[rows], mask[rows], pool[rows].clamp(min=0), pst[rows])
                s = s.masked_fill(pool[rows] < 0, -1e9)
                loss = loss + F.cross_entropy(s, hit[rows].float().argmax(1))
                used += int(rows.sum())
            if isinstance(loss, torch.Tensor):
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += float(loss.detach())
            st["pos"] += len(idx)
            steps += 1
            if steps % 50 == 0:
                print(f"epoch {st['epoch']} window {st['pos']}/{len(perm)} loss {tot / steps:.3f}", flush=True)
        st["train_seconds"] += time.time() - t0
        if st["pos"] < len(perm):
            continue
        st["epoch"] += 1
        st["pos"] = 0
        val = validate()
        row = {"epoch": st["epoch"], "loss": tot / max(steps, 1), "valid": val,
               "train_seconds": round(st["train_seconds"], 1), "lr": args.lr * st.get("lr_scale", 1.0)}
        print(json.dumps(row), flush=True)
        with open(curve, "a") as f:
            f.write(json.dumps(row) + "\n")
        keep = float(np.mean(val["prm_keeps_true"]))
        if keep <= st["best"] and args.lr_decay < 1.0:
            st["lr_scale"] = st.get("lr_scale", 1.0) * args.lr_decay
            for group in opt.param_groups:
                group["lr"] = args.lr * st["lr_scale"]
            print(f"no new best: learning rate -> {args.lr * st['lr_scale']:.2e}", flush=True)
        if keep > st["best"]:
            st["best"], st["best_epoch"] = keep, st["epoch"]
            if isinstance(query, PathQuery):
                with torch.no_grad():
                    prm.node_emb.copy_(query.table())      # folded for export
            torch.save(model.state_dict(), os.path.join(args.work, f"{args.out}.pt"))
            info2 = dict(info, prm_training={"on_policy": True, "beams": args.beams, "candidates": args.candidates,
                                             "query": args.prm_query, "head": args.prm_head,
                                             "epoch": st["epoch"], "valid": val})
            json.dump(info2, open(os.path.join(args.work, f"{args.out}.json"), "w"), indent=1)
        save()


if __name__ == "__main__":
    main()
