"""SASRec with full cross-entropy (Klenitskiy & Vasilev, RecSys 2023), the dense
sequential anchor, on the same split and protocol: train on s[:-2], full ranking over all
items with seen items excluded, test target s[-1] given s[:-1]. Time-boxed training.

python sasrec.py --data DATA --out results/sasrec.json [--minutes 20]
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

sys.path.insert(0, os.path.dirname(__file__))
import data as data_mod  # noqa: E402


class SASRec(nn.Module):
    def __init__(self, n_items, d=64, layers=2, heads=2, max_len=200, dropout=0.2):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)   # 0 = padding, item i -> i+1
        self.pos = nn.Embedding(max_len, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len
        nn.init.normal_(self.item.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, x):
        L = x.shape[1]
        h = self.drop(self.item(x) * math.sqrt(self.item.embedding_dim) + self.pos(torch.arange(L)))
        causal = torch.triu(torch.full((L, L), float("-inf")), 1)
        # no key-padding mask: left padding is a zero item embedding (padding_idx); a padding
        # mask makes all-padding query rows NaN, and NaN leaks through attention
        h = self.enc(h, mask=causal)
        return self.norm(h) @ self.item.weight[1:].T          # [B, L, n_items]


def pad_left(seqs, L):
    out = np.zeros((len(seqs), L), np.int64)
    for i, s in enumerate(seqs):
        s = s[-L:]
        if len(s):
            out[i, L - len(s):] = np.asarray(s) + 1
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ds = data_mod.load(args.data)
    L = 200
    model = SASRec(ds.n_items, max_len=L)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = [s[:-2] for s in ds.seqs]
    t0, epoch = time.time(), 0
    while time.time() - t0 < args.minutes * 60:
        order = rng.permutation(len(train))
        model.train()
        tot = 0.0
        for b in range(0, len(order), 128):
            batch = [train[i][-(L + 1):] for i in order[b:b + 128]]
            x = torch.from_numpy(pad_left([s[:-1] for s in batch], L))
            y = torch.from_numpy(pad_left([s[1:] for s in batch], L)) - 1      # -1 = padding
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, ds.n_items), y.reshape(-1), ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item()
            if time.time() - t0 > args.minutes * 60:
                break
        epoch += 1
        print(f"epoch {epoch} loss {tot / (len(order) / 128):.3f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    acc = {"recall@5": 0.0, "recall@10": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0}
    with torch.no_grad():
        for b in range(0, len(ds.seqs), 256):
            seqs = ds.seqs[b:b + 256]
            x = torch.from_numpy(pad_left([s[:-1] for s in seqs], L))
            scores = model(x)[:, -1, :].numpy()
            for i, s in enumerate(seqs):
                scores[i, s[:-1]] = -np.inf
                target = s[-1]
                if not np.isfinite(scores[i, target]):
                    raise SystemExit(f"non-finite score for user {b + i}: refusing to report")
                rank = int((scores[i] > scores[i, target]).sum())
                for k in (5, 10):
                    if rank < k:
                        acc[f"recall@{k}"] += 1
                        acc[f"ndcg@{k}"] += 1 / math.log2(rank + 2)
    res = {k: v / len(ds.seqs) for k, v in acc.items()}
    res.update({"model": "SASRec (full CE, d=64, 2 blocks, max_len 200)", "epochs": epoch,
                "train_minutes": (time.time() - t0) / 60})
    print(json.dumps(res))
    json.dump(res, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    main()
