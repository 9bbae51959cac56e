"""The dense PRM (`model.prm_kind: "dense"`, models/README.md): a verifier that reads the
generator's encoder output E like the paper's PRM, but as a dense retrieval model does:
the user state u = E[last] @ W + b (the causal encoder's row of the latest item) and one
embedding per trie node, score(node) = <u, e_node> + bias_node.

Why (docs/results/2026-11-30-training.md): the listwise cross-attention PRM never beat the
generator's own score; a dense head on the same frozen memory, trained with full softmax,
added to plain beam search as a verifier, and it trains in minutes:
- the generator is frozen; one encoder pass per chunk of a training sequence serves every
  position (the causal encoder: row p has read items <= p only), so every training target
  is used every epoch;
- per level b, a full softmax over all level-b trie nodes with the target's level-b prefix
  as the positive (the paper's per-depth InfoNCE with every valid prefix as a negative);
- validation after each epoch on the first --valid-users users of the validation split,
  per level, on the generator's own pools (K'=16, K+=64): how often the dense score keeps
  the true prefix in the top K' (top 10 at the last level), as train_prm.py reports;
  patience on their mean; the rate halved after an epoch without a new best.

Resumable: WORK/<out>.ckpt after every epoch, curve models/results/<out>_curve.jsonl;
writes WORK/<out>.pt and WORK/<out>.json (the generator's config + "prm_kind": "dense")
for export.py.

python train_dense_prm.py --work WORK --data DATA --gen small_s200 --out small_s200_dense
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

from . import beam as beam_mod
from . import data as data_mod
from .model import DensePRM, enc_table, load_trained
from .prm_attention import pools
from .trie import Trie


def chunks(seqs, H):
    """(inputs, targets) per chunk of a training sequence t = s[:-2], from its end:
    inputs t[e-1-H:e-1], targets t[e-H:e] (train.py's Chunks)."""
    out = []
    for s in seqs:
        t = s[:-2]
        e = len(t)
        while e > 1:
            lo = max(0, e - 1 - H)
            out.append((t[lo:e - 1], t[lo + 1:e]))
            e -= H
    return out


@torch.no_grad()
def encode_all(gen, ch, H, sids_t):
    """The frozen generator's memory row of every training position, and its target."""
    mems, tgts = [], []
    for b in range(0, len(ch), 64):
        part = ch[b:b + 64]
        codes, mask = beam_mod.history_batch([i for i, _ in part], H, sids_t)
        mem = gen.encode(codes, mask)
        for j, (inp, tgt) in enumerate(part):
            mems.append(mem[j, H - len(inp):].clone())
            tgts.append(torch.as_tensor(np.asarray(tgt), dtype=torch.long))
    return torch.cat(mems), torch.cat(tgts)


def load_frozen(work, gen_name, data_dir):
    """The trained model `gen_name` with its generator frozen (eval mode, no gradients), the
    dataset, its SID table and the encoder's input table (model.enc_table): (model, info,
    gen, cfg, ds, sids, enc_t)."""
    model, info = load_trained(work, gen_name)
    gen, cfg = model.gen.eval(), model.cfg
    for p in gen.parameters():
        p.requires_grad_(False)
    ds = data_mod.load(data_dir)
    sids = np.load(os.path.join(work, info.get("sids", "sids.npy")))
    return model, info, gen, cfg, ds, sids, enc_table(cfg, torch.from_numpy(sids.astype(np.int64)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--gen", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=1024, help="positions per step")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--beams", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--valid-users", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--curve-dir", default="models/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, info, gen, cfg, ds, sids, sids_t = load_frozen(args.work, args.gen, args.data)
    trie = Trie(sids)
    tables = beam_mod.TrieTables(trie, cfg.cmax)
    path_t = torch.from_numpy(trie.path.astype(np.int64))           # [items, L] node ids
    L, H = cfg.levels, cfg.history
    lo = [int(trie.level_start[b + 1]) for b in range(L)]             # first node of level b+1
    hi = [int(trie.level_start[b + 2]) for b in range(L)]
    prm = DensePRM(cfg.d, trie.num_nodes)
    from_head = isinstance(model.prm, DensePRM)
    if from_head:      # a multi-task generator (train.py --dense-aux): start from its head
        prm.load_state_dict(model.prm.state_dict())
        print(f"dense head from {args.gen} (trained with its generator)", flush=True)
    opt = torch.optim.Adam(prm.parameters(), lr=args.lr)
    ckpt = os.path.join(args.work, f"{args.out}.ckpt")
    curve = os.path.join(args.curve_dir, f"{args.out}_curve.jsonl")
    st = {"epoch": 0, "best": -1.0, "best_epoch": 0, "train_seconds": 0.0, "lr_scale": 1.0}
    if os.path.exists(ckpt):
        c = torch.load(ckpt, weights_only=False)
        prm.load_state_dict(c["prm"])
        opt.load_state_dict(c["opt"])
        st = c["state"]
        print(f"resumed after epoch {st['epoch']}", flush=True)
    elif os.path.exists(curve):
        os.remove(curve)
    t0 = time.time()
    mem, tgt = encode_all(gen, chunks(ds.seqs, H), H, sids_t)
    tgt_nodes = path_t[tgt]                                             # [N, L]
    print(f"encoded {len(tgt)} training positions in {time.time() - t0:.0f} s", flush=True)

    @torch.no_grad()
    def validate():
        rows = [(s[:-2], s[-2]) for s in ds.seqs[:args.valid_users]]
        kept, kept_gen, n_in = np.zeros(L), np.zeros(L), np.zeros(L)
        for b in range(0, len(rows), 128):
            chunk = rows[b:b + 128]
            codes, mask = beam_mod.history_batch([h for h, _ in chunk], H, sids_t)
            m = gen.encode(codes, mask)
            true = path_t[torch.tensor([t for _, t in chunk])]
            for level, (pool, cum, _, _) in enumerate(pools(gen, tables, m, mask, args.beams, args.candidates)):
                s = prm.score(m, mask, pool.clamp(min=0)).masked_fill(pool < 0, -math.inf)
                hit = pool == true[:, level:level + 1]
                has = hit.any(1)
                kb = min(args.beams, pool.shape[1]) if level < L - 1 else 10
                for x, acc in ((s, kept), (cum, kept_gen)):
                    t = torch.where(hit, x, torch.zeros_like(x)).sum(1, keepdim=True)
                    r = (x > torch.where(has[:, None], t, torch.tensor(math.inf))).sum(1)
                    acc[level] += float(((r < kb) & has).sum())
                n_in[level] += float(has.sum())
        n = len(rows)
        return {"prm_keeps_true": (kept / n).round(4).tolist(), "gen_keeps_true": (kept_gen / n).round(4).tolist(),
                "true_in_pool": (n_in / n).round(4).tolist()}

    def keep_if_best(val):
        """Save the model if `val` is the best mean keep-rate so far; False if not."""
        keep = float(np.mean(val["prm_keeps_true"]))
        if keep <= st["best"]:
            return False
        st["best"], st["best_epoch"] = keep, st["epoch"]
        model.prm = prm
        torch.save(model.state_dict(), os.path.join(args.work, f"{args.out}.pt"))
        cfg2 = dict(cfg.to_dict(), prm_kind="dense")
        info2 = dict(info, config=cfg2, params_prm=sum(p.numel() for p in prm.parameters()),
                     prm_training={"kind": "dense", "epoch": st["epoch"], "valid": val,
                                   "positions": int(len(tgt))})
        json.dump(info2, open(os.path.join(args.work, f"{args.out}.json"), "w"), indent=1)
        return True

    if from_head and st["epoch"] == 0:       # the joint head is epoch 0: fine-tuning must beat it
        val = validate()
        print(json.dumps({"epoch": 0, "valid": val}), flush=True)
        with open(curve, "a") as f:
            f.write(json.dumps({"epoch": 0, "valid": val}) + "\n")
        keep_if_best(val)
    while st["epoch"] < args.max_epochs and (st["epoch"] == 0 or st["epoch"] - st["best_epoch"] < args.patience):
        t0 = time.time()
        g = torch.Generator().manual_seed(1000 + st["epoch"])
        perm = torch.randperm(len(tgt), generator=g)
        tot = 0.0
        for s0 in range(0, len(perm), args.batch):
            i = perm[s0:s0 + args.batch]
            u = prm.user(mem[i])                                          # [B, d]
            loss = 0.0
            for b in range(L):
                logits = u @ prm.node[lo[b]:hi[b]].T + prm.node_bias[lo[b]:hi[b]]
                loss = loss + F.cross_entropy(logits, tgt_nodes[i, b] - lo[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(i)
        st["train_seconds"] += time.time() - t0
        st["epoch"] += 1
        val = validate()
        row = {"epoch": st["epoch"], "loss": round(tot / len(tgt), 4), "valid": val,
               "train_seconds": round(st["train_seconds"], 1), "lr": args.lr * st["lr_scale"]}
        print(json.dumps(row), flush=True)
        with open(curve, "a") as f:
            f.write(json.dumps(row) + "\n")
        if not keep_if_best(val):
            st["lr_scale"] *= 0.5
            for group in opt.param_groups:
                group["lr"] = args.lr * st["lr_scale"]
        torch.save({"prm": prm.state_dict(), "opt": opt.state_dict(), "state": st}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)


if __name__ == "__main__":
    main()
