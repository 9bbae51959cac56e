"""Joint training of the generator (next-token loss over SID levels) and the PRM
(InfoNCE per depth against negatives drawn uniformly from that depth's valid prefixes).

python train.py --work WORK --size small|large --samples N [--threads T]
Reads WORK/sids.npy (from prepare.py), writes WORK/<size>.pt and WORK/<size>.json.
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

sys.path.insert(0, os.path.dirname(__file__))
import data as data_mod  # noqa: E402
from model import Config, Promise  # noqa: E402
from trie import Trie  # noqa: E402

SIZES = {
    # phone-sized default bundle
    "small": dict(d=64, heads=4, ff=256, enc_layers=2, dec_layers=2),
    # >= 4x the small generator's parameters, for the scaling comparison
    "large": dict(d=128, heads=8, ff=512, enc_layers=3, dec_layers=2),
    # the tiny test bundle (shape-complete, trained for a few hundred steps)
    "tiny": dict(d=16, heads=4, ff=32, enc_layers=1, dec_layers=1),
}


def make_config(size, sids, trie, history=20):
    L = sids.shape[1]
    codebook = [int(sids[:, l].max()) + 1 for l in range(L)]
    return Config(levels=L, codebook=codebook, history=history, num_nodes=trie.num_nodes, **SIZES[size])


class Windows:
    """All (user, t) next-item windows of the training split, as flat index arrays."""

    def __init__(self, seqs, H, part="train"):
        self.H = H
        trains = [s[:-2] for s in seqs]
        self.flat = np.concatenate([np.asarray(t, np.int64) for t in trains])
        offs = np.cumsum([0] + [len(t) for t in trains])[:-1]
        users, ts = [], []
        for u, t in enumerate(trains):
            users.append(np.full(len(t) - 1, u))
            ts.append(np.arange(1, len(t)))
        self.off = offs
        self.user = np.concatenate(users)
        self.t = np.concatenate(ts)

    def __len__(self):
        return len(self.t)

    def batch(self, idx):
        u, t = self.user[idx], self.t[idx]
        pos = t[:, None] - self.H + np.arange(self.H)[None, :]
        valid = pos >= 0
        hist = self.flat[self.off[u][:, None] + np.maximum(pos, 0)]
        target = self.flat[self.off[u] + t]
        return hist, valid.astype(np.float32), target


def losses(model, trie_t, sids_t, level_start, hist, mask, target, n_neg, rng):
    cfg = model.cfg
    L = cfg.levels
    codes = sids_t[hist]                          # [B,H,L]
    mem = model.gen.encode(codes, mask)
    tgt = sids_t[target]                          # [B,L]
    logp = model.gen.decode(mem, mask, tgt[:, :-1])
    gen = F.nll_loss(logp.reshape(-1, logp.shape[-1]), tgt.reshape(-1))
    path = trie_t[target]                         # [B,L] node ids
    prm_total = 0.0
    accs = []
    for d in range(1, L + 1):
        lo, hi = level_start[d], level_start[d + 1]
        neg = torch.from_numpy(rng.integers(lo, hi, size=n_neg))
        pos = path[:, d - 1]
        nodes = torch.cat([pos[:, None], neg[None, :].expand(len(pos), -1)], 1)
        s = model.prm.score(mem, mask, nodes)
        dup = torch.cat([torch.zeros_like(pos[:, None], dtype=torch.bool), nodes[:, 1:].eq(pos[:, None])], 1)
        s = s.masked_fill(dup, -1e9)   # a negative that is the positive is not a negative
        prm_total = prm_total + F.cross_entropy(s, torch.zeros(len(pos), dtype=torch.long))
        accs.append((s.argmax(1) == 0).float().mean().item())
    return gen, prm_total / L, accs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--size", default="small", choices=list(SIZES))
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--neg", type=int, default=32)
    ap.add_argument("--prm-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    ds = data_mod.load(args.data)
    sids = np.load(os.path.join(args.work, "sids.npy"))
    trie = Trie(sids)
    cfg = make_config(args.size, sids, trie)
    model = Promise(cfg)
    g, r = model.n_params()
    print(f"{args.size}: generator {g} params, prm {r} params ({100 * r / g:.0f}% of generator)", flush=True)
    win = Windows(ds.seqs, cfg.history)
    print(f"{len(win)} training windows; training on {args.samples} sampled windows", flush=True)
    sids_t = torch.from_numpy(sids.astype(np.int64))
    trie_t = torch.from_numpy(trie.path)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    steps = args.samples // args.batch
    warm = min(200, steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    t0 = time.time()
    ema = None
    for step in range(steps):
        idx = rng.integers(0, len(win), size=args.batch)
        hist, mask, target = win.batch(idx)
        gen, prm, accs = losses(model, trie_t, sids_t, trie.level_start,
                                torch.from_numpy(hist), torch.from_numpy(mask),
                                torch.from_numpy(target), args.neg, rng)
        loss = gen + args.prm_weight * prm
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        cur = np.array([gen.item(), prm.item()] + accs)
        ema = cur if ema is None else 0.98 * ema + 0.02 * cur
        if step % 100 == 0 or step == steps - 1:
            el = time.time() - t0
            print(f"step {step}/{steps} gen {ema[0]:.3f} prm {ema[1]:.3f} prm-acc/level "
                  f"{' '.join(f'{a:.2f}' for a in ema[2:])} | {(step + 1) * args.batch / el:.0f} samples/s",
                  flush=True)
    out = args.out or args.size
    torch.save(model.state_dict(), os.path.join(args.work, f"{out}.pt"))
    with open(os.path.join(args.work, f"{out}.json"), "w") as f:
        json.dump({"size": args.size, "config": cfg.to_dict(), "samples": args.samples,
                   "params_generator": g, "params_prm": r, "train_seconds": time.time() - t0}, f, indent=1)
    print(f"saved {out} in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
