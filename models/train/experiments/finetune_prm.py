"""Second phase (ours): refine the PRM against the negatives the search actually meets.

Measured first (models/README.md): after joint training with uniform negatives only, the
PRM ranked the search's candidates worse than the generator (valid Recall@10 at K'=16:
PRM-guided 0.119 vs plain 0.153). Uniform negatives are easy; the candidates the PRM must
separate at level b are the children of the surviving level-(b-1) beams, i.e. siblings
and cousins of the true prefix. This phase freezes the generator and trains the PRM with
InfoNCE per depth over: all depth-1 nodes at depth 1; at deeper levels siblings (same
parent), cousins (same level-1 ancestor) and uniform negatives of that depth.

python finetune_prm.py --work WORK --model small --samples 150000
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
from promise_train import data as data_mod  # noqa: E402
from promise_train.model import load_trained  # noqa: E402
from promise_train.train import Windows  # noqa: E402
from promise_train.trie import Trie  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--data", default="data")
    ap.add_argument("--model", default="small")
    ap.add_argument("--samples", type=int, default=150_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model, info = load_trained(args.work, args.model)
    cfg = model.cfg
    for p in model.gen.parameters():
        p.requires_grad_(False)
    ds = data_mod.load(args.data)
    sids = np.load(os.path.join(args.work, "sids.npy"))
    trie = Trie(sids)
    L, ls, fc = trie.levels, trie.level_start, trie.first_child.astype(np.int64)
    win = Windows(ds.seqs, cfg.history)
    sids_t = torch.from_numpy(sids.astype(np.int64))
    opt = torch.optim.AdamW(model.prm.parameters(), lr=args.lr, weight_decay=0.01)
    steps = args.samples // args.batch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    n_sib, n_cous, n_uni = 16, 16, 16
    t0 = time.time()
    ema = None
    model.gen.eval()
    for step in range(steps):
        idx = rng.integers(0, len(win), size=args.batch)
        hist, mask, target = win.batch(idx)
        with torch.no_grad():
            mem = model.gen.encode(sids_t[torch.from_numpy(hist)], torch.from_numpy(mask))
        mask_t = torch.from_numpy(mask)
        path = trie.path[target]                     # [B, L] node ids
        total, accs = 0.0, []
        for d in range(1, L + 1):
            pos = path[:, d - 1]
            if d == 1:
                neg = np.broadcast_to(np.arange(ls[1], ls[2]), (len(pos), ls[2] - ls[1]))
            else:
                parent = path[:, d - 2]
                lo, hi = fc[parent], fc[parent + 1]
                sib = lo[:, None] + (rng.random((len(pos), n_sib)) * (hi - lo)[:, None]).astype(np.int64)
                anc = path[:, 0]
                clo, chi = anc, anc + 1
                for _ in range(d - 1):                 # descend the level-1 ancestor's range to depth d
                    clo, chi = fc[clo], fc[chi]
                cous = clo[:, None] + (rng.random((len(pos), n_cous)) * (chi - clo)[:, None]).astype(np.int64)
                uni = rng.integers(ls[d], ls[d + 1], size=(len(pos), n_uni))
                neg = np.concatenate([sib, cous, uni], 1)
            nodes = torch.from_numpy(np.concatenate([pos[:, None], neg], 1).astype(np.int64))
            s = model.prm.score(mem, mask_t, nodes)
            dup = torch.cat([torch.zeros(len(pos), 1, dtype=torch.bool), nodes[:, 1:].eq(nodes[:, :1])], 1)
            s = s.masked_fill(dup, -1e9)
            total = total + F.cross_entropy(s, torch.zeros(len(pos), dtype=torch.long))
            accs.append((s.argmax(1) == 0).float().mean().item())
        loss = total / L
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.prm.parameters(), 1.0)
        opt.step()
        sched.step()
        cur = np.array([loss.item()] + accs)
        ema = cur if ema is None else 0.98 * ema + 0.02 * cur
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}/{steps} prm {ema[0]:.3f} hard-acc/level {' '.join(f'{a:.2f}' for a in ema[1:])} | "
                  f"{(step + 1) * args.batch / (time.time() - t0):.0f} samples/s", flush=True)
    torch.save(model.state_dict(), os.path.join(args.work, f"{args.model}.pt"))
    info["prm_finetune"] = {"samples": args.samples, "negatives": "all depth-1 / 16 siblings + 16 cousins + 16 uniform",
                            "seconds": time.time() - t0}
    json.dump(info, open(os.path.join(args.work, f"{args.model}.json"), "w"), indent=1)
    print(f"refined the PRM of {args.model} in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
