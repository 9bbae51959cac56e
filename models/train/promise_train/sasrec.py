"""SASRec trained the standard way, the dense sequential anchor: every training target of
every user per epoch (each training sequence cut into windows of L+1 items from its end, so
that a target is in exactly one window; a user with 1,000 items gives 5 windows), causal self-attention, full softmax cross-entropy over all
items (as in Klenitskiy & Vasilev, RecSys 2023), L = 200. Same split and protocol as the
runtime: train on s[:-2]; validation target s[-2] given s[:-2]; test target s[-1] given
s[:-1]; full ranking over all items with seen items excluded.

Trains until validation Recall@10 has not improved for --patience epochs; the learning rate
is multiplied by --lr-decay after every epoch that does not set a new best (the generator's
schedule in train.py). Resumable: the
state after every epoch is in WORK/sasrec.ckpt (model, optimizer, rng, curve); run the same
command again to continue. The learning curve goes to models/results/sasrec_curve.jsonl,
the final test metrics (best validation epoch) to --out.

python sasrec.py --data DATA --work WORK --out models/results/sasrec.json
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

from .outputs import output
from . import data as data_mod
from . import log as log_mod


class SASRec(nn.Module):
    def __init__(self, n_items, d=64, layers=2, heads=2, max_len=200, dropout=0.2):
        super().__init__()
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)   # 0 = padding, item i -> i+1
        self.pos = nn.Embedding(max_len, d)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len
        nn.init.normal_(self.item.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def hidden(self, x):
        L = x.shape[1]
        # right-aligned: the last column is position max_len - 1 however many leading
        # all-padding columns a batch was trimmed of
        pos = self.pos(torch.arange(self.max_len - L, self.max_len))
        h = self.drop(self.item(x) * math.sqrt(self.item.embedding_dim) + pos)
        causal = torch.triu(torch.full((L, L), float("-inf")), 1)
        # no key-padding mask: left padding is a zero item embedding (padding_idx); a padding
        # mask makes all-padding query rows NaN, and NaN leaks through attention
        return self.norm(self.enc(h, mask=causal))

    def forward(self, x):
        return self.hidden(x) @ self.item.weight[1:].T          # [B, L, n_items]


def windows(seq, L):
    """Cut one training sequence into windows of at most L+1 items, from its end, so that
    every item but the first is a target in exactly one window."""
    out = []
    end = len(seq)
    while end > 1:
        out.append(seq[max(0, end - L - 1):end])
        end -= L
    return out


def pad_left(seqs, L):
    out = np.zeros((len(seqs), L), np.int64)
    for i, s in enumerate(seqs):
        s = s[-L:]
        if len(s):
            out[i, L - len(s):] = np.asarray(s) + 1
    return out


def evaluate(model, seqs, split, L, n_items):
    """Recall/NDCG@5/10 over all users; split 'valid' (s[:-2] -> s[-2]) or 'test'."""
    cut = 2 if split == "valid" else 1
    return evaluate_pairs(model, [(s[:-cut], s[-cut]) for s in seqs], L, n_items, ks=(5, 10))


@torch.no_grad()
def evaluate_pairs(model, pairs, L, n_items, ks=(10, 20)):
    """Recall/NDCG@k over (history, target) examples (a Log's), the history's items
    excluded from the ranking (the runtime's rule); an unknown target (-1) is a miss."""
    model.eval()
    acc = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    for b in range(0, len(pairs), 256):
        chunk = pairs[b:b + 256]
        x = torch.from_numpy(pad_left([h for h, _ in chunk], L))
        scores = model.hidden(x)[:, -1, :] @ model.item.weight[1:].T
        for i, (h, t) in enumerate(chunk):
            if t < 0 or t in h:
                continue   # unknown, or a repeat of a history item (excluded: a miss)
            row = scores[i]
            row[h] = -math.inf
            if not math.isfinite(float(row[t])):
                raise SystemExit(f"non-finite score for example {b + i}: refusing to report")
            rank = int((row > row[t]).sum())
            for k in ks:
                if rank < k:
                    acc[f"recall@{k}"] += 1
                    acc[f"ndcg@{k}"] += 1 / math.log2(rank + 2)
    model.train()
    return {k: v / max(len(pairs), 1) for k, v in acc.items()}


def sampled_loss(model, x, y, counts, n_neg, gen):
    """Sampled softmax with the log-Q correction: the target against `n_neg` items drawn
    (shared by the batch) from the training frequency ** 0.75, accidental hits masked."""
    h = model.hidden(x)                                   # [B, P, d]
    m = y >= 0
    h, y = h[m], y[m]                                     # real positions only
    q = counts / counts.sum()
    neg = torch.multinomial(q, n_neg, replacement=True, generator=gen)
    w = model.item.weight[1:]
    pos_l = (h * w[y]).sum(1, keepdim=True) - torch.log(q[y] * n_neg)[:, None]
    neg_l = h @ w[neg].T - torch.log(q[neg] * n_neg)[None, :]
    neg_l = neg_l.masked_fill(neg[None, :] == y[:, None], -1e9)
    logits = torch.cat([pos_l, neg_l], 1)
    return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long))


def length_batches(lens, batch, rng):
    """Windows of similar length together, in random order (each batch is trimmed to its
    longest window, see SASRec.hidden)."""
    order = np.lexsort((rng.random(len(lens)), lens))
    out = [order[i:i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(out)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data")
    ap.add_argument("--work", default="models/train/work")
    ap.add_argument("--out", required=True)
    ap.add_argument("--curve", default="models/results/sasrec_curve.jsonl")
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--lr-decay", type=float, default=0.5,
                    help="multiply the rate by this after an epoch without a new best")
    ap.add_argument("--name", default="sasrec", help="checkpoint name in --work")
    ap.add_argument("--max-epochs", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--minutes", type=float, default=150, help="stop this run (resumable) after this long")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", default=None, help="a split log (WORK/log.pkl, written by `build`) instead of ML-1M")
    ap.add_argument("--max-len", type=int, default=200, help="--log: the history window L")
    ap.add_argument("--negatives", type=int, default=0,
                    help="0: full softmax over all items; N: sampled softmax with N shared negatives (log-Q)")
    ap.add_argument("--metric", default="recall@10", help="the validation metric that picks the best epoch")
    ap.add_argument("--halve-after", type=int, default=1,
                    help="halve the rate (--lr-decay) after this many epochs in a row without a new best")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.log:   # any interaction log (log.py), split by `build`
        lg = log_mod.restore(args.log)
        n_items, L = len(lg.items), args.max_len
        train_seqs = lg.train
        valid_pairs, test_pairs = lg.examples("valid"), lg.examples("test")
        evaluate_valid = lambda m: evaluate_pairs(m, valid_pairs, L, n_items)   # noqa: E731
        evaluate_test = lambda m: evaluate_pairs(m, test_pairs, L, n_items)     # noqa: E731
    else:          # ML-1M, leave-one-out
        ds = data_mod.load(args.data)
        n_items, L = ds.n_items, 200
        train_seqs = [s[:-2] for s in ds.seqs]
        evaluate_valid = lambda m: evaluate(m, ds.seqs, "valid", L, n_items)    # noqa: E731
        evaluate_test = lambda m: evaluate(m, ds.seqs, "test", L, n_items)      # noqa: E731
    model = SASRec(n_items, max_len=L)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    os.makedirs(args.work, exist_ok=True)
    ckpt = os.path.join(args.work, f"{args.name}.ckpt")
    best_path = os.path.join(args.work, f"{args.name}_best.pt")
    state = {"epoch": 0, "best": -1.0, "best_epoch": 0, "train_seconds": 0.0, "lr_scale": 1.0, "since_halving": 0}
    gen = torch.Generator().manual_seed(0)
    if os.path.exists(ckpt):
        c = torch.load(ckpt, weights_only=False)
        model.load_state_dict(c["model"])
        opt.load_state_dict(c["opt"])
        rng.bit_generator.state = c["rng"]
        state = c["state"]
        if "gen" in c:
            gen.set_state(c["gen"])
        print(f"resumed after epoch {state['epoch']} (best valid {args.metric} {state['best']:.4f} at "
              f"{state['best_epoch']})", flush=True)
    elif os.path.exists(args.curve):
        os.remove(args.curve)
    for g in opt.param_groups:
        g["lr"] = args.lr * state.get("lr_scale", 1.0)
    train = [w for s in train_seqs for w in windows(s, L)]
    n_targets = sum(len(w) - 1 for w in train)
    counts = torch.ones(n_items)      # +1: every item can be drawn as a negative
    for s in train_seqs:
        counts.index_add_(0, torch.as_tensor(s, dtype=torch.long), torch.ones(len(s)))
    counts = counts ** 0.75
    lens = np.array([len(w) for w in train])
    print(f"{len(train)} windows, {n_targets} training targets, {n_items} items, "
          f"{'full softmax' if not args.negatives else f'sampled softmax ({args.negatives} negatives)'}",
          flush=True)
    t_run = time.time()
    while (state["epoch"] < args.max_epochs and state["epoch"] - state["best_epoch"] < args.patience
           and time.time() - t_run < args.minutes * 60):
        t0 = time.time()
        if args.log:
            groups = length_batches(lens, args.batch, rng)
        else:
            order = rng.permutation(len(train))
            groups = [order[b:b + args.batch] for b in range(0, len(order), args.batch)]
        model.train()
        tot, n = 0.0, 0
        for idx in groups:
            batch = [train[i] for i in idx]
            width = L if not args.log else max(len(s) for s in batch) - 1
            x = torch.from_numpy(pad_left([s[:-1] for s in batch], width))
            y = torch.from_numpy(pad_left([s[1:] for s in batch], width)) - 1      # -1 = padding
            if args.negatives:
                loss = sampled_loss(model, x, y, counts, args.negatives, gen)
            else:
                loss = F.cross_entropy(model(x).reshape(-1, n_items), y.reshape(-1), ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot, n = tot + loss.item(), n + 1
        state["epoch"] += 1
        state["train_seconds"] += time.time() - t0
        val = evaluate_valid(model)
        lr_now = args.lr * state.get("lr_scale", 1.0)
        if val[args.metric] > state["best"]:
            state["best"], state["best_epoch"] = val[args.metric], state["epoch"]
            state["since_halving"] = 0
            torch.save(model.state_dict(), best_path)
        else:
            # halve on a plateau: after --halve-after epochs without a new best (1 = every one)
            state["since_halving"] = state.get("since_halving", 0) + 1
            if state["since_halving"] >= args.halve_after:
                state["since_halving"] = 0
                state["lr_scale"] = state.get("lr_scale", 1.0) * args.lr_decay
                for g in opt.param_groups:
                    g["lr"] = args.lr * state["lr_scale"]
        row = {"epoch": state["epoch"], "loss": tot / n, "valid": val, "lr": lr_now,
               "train_seconds": round(state["train_seconds"], 1)}
        with open(args.curve, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                    "state": state, "gen": gen.get_state()}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)
    if state["epoch"] - state["best_epoch"] < args.patience and state["epoch"] < args.max_epochs:
        print(f"stopped after epoch {state['epoch']} without a plateau; run again to resume", flush=True)
        return
    model.load_state_dict(torch.load(best_path))
    res = evaluate_test(model)
    loss_name = f"sampled softmax, {args.negatives} negatives" if args.negatives else "full CE"
    res.update({"model": f"SASRec (every training target, {loss_name}, d=64, 2 blocks, 2 heads, L={L}, dropout 0.2)",
                "metric": args.metric, "halve_after": args.halve_after, "negatives": args.negatives,
                "windows": len(train), "training_targets": n_targets, "lr_decay": args.lr_decay,
                "epochs": state["epoch"], "best_epoch": state["best_epoch"],
                f"valid_{args.metric}": state["best"], "batch": args.batch, "lr": args.lr,
                "patience": args.patience, "train_minutes": state["train_seconds"] / 60})
    print(json.dumps(res))
    with output(args.out) as f:
        json.dump(res, f, indent=1)
    emb = model.item.weight[1:].detach().numpy().astype(np.float32)
    np.save(os.path.join(args.work, f"{args.name}_items.npy"), emb)   # for SIDs from SASRec embeddings


if __name__ == "__main__":
    main()
