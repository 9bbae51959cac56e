"""Training of the generator (next-token loss over SID levels), optionally joint with
the PRM (InfoNCE per depth against negatives drawn uniformly from that depth's valid
prefixes; --prm-weight 0 trains the generator alone, as the shipped models now are).

Every training window is used once per epoch (a fresh permutation each epoch, no sampling
with replacement). After each epoch: plain beam search (K'=16) on the validation split
(Recall@10 / NDCG@10, beam.py); training stops when validation Recall@10 has not improved
for --patience epochs, or after --samples windows when given (the tiny test bundle).
Resumable: the state is checkpointed to WORK/<out>.ckpt every --ckpt-minutes and after
each epoch; run the same command again to continue. The learning curve goes to
models/results/<out>_curve.jsonl; the best checkpoint by validation to WORK/<out>.pt.

python train.py --work WORK --size small|large [--history 20] [--prm-weight 0] [--out NAME]
Reads WORK/sids.npy (from prepare.py), writes WORK/<out>.pt and WORK/<out>.json.
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

from . import log as log_mod
from . import beam as beam_mod
from . import distill as distill_mod
from .model import Config, Promise, enc_table
from .trie import Trie

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
    """All (user, t) next-item windows of the training sequences, as flat index arrays."""

    def __init__(self, trains, H):
        self.H = H
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


class Chunks:
    """Causal training: each training sequence cut from its end into chunks of H
    target positions (inputs t[e-1-H:e-1], targets t[e-H:e] for e = n, n-H, ...), so every
    training target is used exactly once per epoch with one encoder pass per chunk.
    Batches group chunks of similar length, and each is trimmed to its longest chunk:
    the trimmed leading columns are all padding, masked in every attention, so this is
    exact and saves the padding's compute."""

    def __init__(self, trains, H):
        self.H = H
        self.inputs, self.targets = [], []
        for t in trains:
            e = len(t)
            while e > 1:
                lo = max(0, e - 1 - H)
                self.inputs.append(np.asarray(t[lo:e - 1], np.int64))
                self.targets.append(np.asarray(t[lo + 1:e], np.int64))
                e -= H
        self.lens = np.array([len(x) for x in self.inputs])
        self.n_targets = int(self.lens.sum())

    def __len__(self):
        return len(self.lens)

    def epoch_batches(self, seed, targets_per_batch):
        """A fresh grouping each epoch: chunks sorted by (length, random), cut into
        batches of about `targets_per_batch` padded positions, in random order."""
        rng = np.random.default_rng(seed)
        order = np.lexsort((rng.random(len(self.lens)), self.lens))
        batches, cur = [], []
        for i in order:
            if cur and (len(cur) + 1) * self.lens[i] > targets_per_batch:
                batches.append(np.array(cur))
                cur = []
            cur.append(i)
        if cur:
            batches.append(np.array(cur))
        rng.shuffle(batches)
        return batches

    def batch(self, idx):
        n = int(self.lens[idx].max())
        x = np.zeros((len(idx), n), np.int64)
        y = np.zeros((len(idx), n), np.int64)
        m = np.zeros((len(idx), n), np.float32)
        for r, i in enumerate(idx):
            k = self.lens[i]
            x[r, n - k:], y[r, n - k:], m[r, n - k:] = self.inputs[i], self.targets[i], 1.0
        return x, m, y


def causal_loss(model, sids_t, hist, mask, target, dense=None, distill=None):
    """Mean next-token loss over every real position and level (causal encoder); with
    `dense` = (trie paths [items, L], level bounds), also the dense PRM's loss on the same
    memory (full softmax per level over that level's trie nodes, `--dense-aux`). With
    `distill` (a dict: teacher, tri, weights, query, rng; distill.py), the teacher's
    losses: (gen + w * KL, PRM distillation loss, per-level PRM/teacher agreement)."""
    mem = model.gen.encode(enc_table(model.cfg, sids_t)[hist], mask)   # [B,P,d]
    tgt = sids_t[target]                                      # [B,P,L]
    logp = model.gen.decode_all(mem, mask, tgt)               # [B,P,L,C]
    nll = -logp.gather(3, tgt[..., None])[..., 0].sum(2)      # [B,P]
    gen = (nll * mask).sum() / (mask.sum() * tgt.shape[2])
    if distill is not None:
        tlp = distill["teacher"].log_probs(hist, mask)
        if distill["gen_w"] > 0:
            kl = distill_mod.generator_kl(logp, tlp, target, distill["tri"])
            gen = gen + distill["gen_w"] * (kl * mask).sum() / mask.sum()
        if distill["prm_w"] > 0:
            prm, agree = distill_mod.prm_distill_loss(model.prm, distill["query"], distill["tri"], mem.detach(),
                                                      mask, lambda bi, pi: tlp[bi, pi], distill["rng"],
                                                      distill["positions"])
            return gen, prm, agree
        return gen, 0.0, []
    if dense is None:
        return gen, 0.0
    path_t, bounds = dense[0], dense[1]
    sampler = dense[2] if len(dense) > 2 else None
    u = model.prm.user(mem)                                   # [B,P,d]
    nodes = path_t[target]                                    # [B,P,L]
    aux = 0.0
    for b, (lo, hi) in enumerate(bounds):
        if sampler is not None and sampler.samples(b):
            live = mask.reshape(-1) > 0
            aux = aux + sampler.loss(model.prm, b, u.reshape(-1, u.shape[-1])[live], nodes[..., b].reshape(-1)[live])
            continue
        logits = u @ model.prm.rows(torch.arange(lo, hi)).T + model.prm.node_bias[lo:hi]
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, hi - lo), (nodes[..., b] - lo).reshape(-1),
                                               reduction="none").reshape(mask.shape)
        aux = aux + (ce * mask).sum() / mask.sum()
    return gen, aux


class PrefixNegatives:
    """The per-level InfoNCE of the dense PRM on a large catalog (`--dense-negatives N`): at
    a level with more than N trie nodes, the positive prefix against N negatives shared by
    the batch, drawn from that level's valid prefixes: uniformly (the paper's), or by
    popularity^0.75 with the log-Q correction (`--dense-sampling popularity`, SASRec's
    sampled softmax). A negative that is the positive is masked. Levels of at most N nodes
    keep the full softmax."""

    def __init__(self, bounds, n, sampling, item_counts, path, seed):
        self.bounds, self.n, self.sampling = bounds, n, sampling
        self.gen = torch.Generator().manual_seed(seed)
        self.q = []
        for b, (lo, hi) in enumerate(bounds):
            if sampling == "popularity":
                cnt = torch.zeros(hi - lo, dtype=torch.float64)
                cnt.index_add_(0, path[:, b] - lo, torch.as_tensor(item_counts, dtype=torch.float64))
                w = (cnt + 1.0) ** 0.75
                self.q.append((w / w.sum()).float())
            else:
                self.q.append(None)

    def samples(self, b):
        lo, hi = self.bounds[b]
        return self.n > 0 and hi - lo > self.n

    def loss(self, prm, b, u, pos):
        """Mean InfoNCE over the rows of u [M,d] with positive nodes pos [M] (global ids)."""
        lo, hi = self.bounds[b]
        q = self.q[b]
        if q is None:
            neg = torch.randint(0, hi - lo, (self.n,), generator=self.gen)
        else:
            neg = torch.multinomial(q, self.n, replacement=True, generator=self.gen)
        neg_g = neg + lo
        s_pos = (u * prm.rows(pos)).sum(-1) + prm.node_bias[pos]            # [M]
        s_neg = u @ prm.rows(neg_g).T + prm.node_bias[neg_g]                # [M,N]
        if q is not None:    # log-Q: a popular negative is sampled often, not more wrong
            s_pos = s_pos - torch.log(q[pos - lo] * self.n)
            s_neg = s_neg - torch.log(q[neg] * self.n)[None, :]
        s_neg = s_neg.masked_fill(neg_g[None, :] == pos[:, None], -1e9)
        logits = torch.cat([s_pos[:, None], s_neg], 1)
        return (torch.logsumexp(logits, 1) - logits[:, 0]).mean()


def losses(model, trie_t, sids_t, level_start, hist, mask, target, n_neg, rng):
    cfg = model.cfg
    L = cfg.levels
    codes = enc_table(cfg, sids_t)[hist]          # [B,H,L(+1)]
    mem = model.gen.encode(codes, mask)
    tgt = sids_t[target]                          # [B,L]
    logp = model.gen.decode(mem, mask, tgt[:, :-1])
    gen = F.nll_loss(logp.reshape(-1, logp.shape[-1]), tgt.reshape(-1))
    if n_neg == 0:
        return gen, 0.0, []
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
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--causal", action="store_true",
                    help="causal encoder, every position of a chunk a target (one encoder pass per chunk)")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--batch-targets", type=int, default=8192, help="--causal: padded positions per batch")
    ap.add_argument("--samples", type=int, default=0, help="stop after this many windows (0: at the plateau)")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--lr-decay", type=float, default=1.0,
                    help="multiply the learning rate by this after an epoch without a new best (1 = off)")
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--neg", type=int, default=32)
    ap.add_argument("--prm-weight", type=float, default=0.0)
    ap.add_argument("--valid-users", type=int, default=0,
                    help="validate on N examples spread over the validation split (0 = all)")
    ap.add_argument("--log", default=None, help="a split log (promise_train log --out) instead of ML-1M")
    ap.add_argument("--metric", default="recall@10",
                    choices=["recall@10", "recall@20", "ndcg@10", "ndcg@20", "guided_recall@20", "guided_ndcg@20",
                             "guided_recall@10", "guided_ndcg@10", "head_recall@20", "head_ndcg@20",
                             "head_recall@10", "head_ndcg@10"],
                    help="the validation metric that picks the best epoch (head_*: --dense-aux's PRM "
                         "scoring every item, the ceiling a wide PRM-guided search approaches)")
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--minutes", type=float, default=150, help="stop this run (resumable) after this long")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--sids", default="sids.npy", help="the SID table in WORK (prepare.py --out)")
    ap.add_argument("--curve-dir", default="models/results")
    ap.add_argument("--dense-aux", type=float, default=0.0,
                    help="--causal: also train a dense PRM head (model.DensePRM) on the encoder's memory, "
                         "this weight on its loss: the encoder learns a dense next-item signal too")
    ap.add_argument("--dense-negatives", type=int, default=0,
                    help="--dense-aux: at a level with more trie nodes than this, InfoNCE against this many "
                         "sampled prefixes instead of the full softmax (0: full softmax at every level)")
    ap.add_argument("--dense-sampling", default="uniform", choices=["uniform", "popularity"],
                    help="--dense-negatives: valid prefixes drawn uniformly (the paper's) or by "
                         "popularity^0.75 with the log-Q correction")
    ap.add_argument("--guided", default="16,256",
                    help="--dense-aux: the validation's PRM-guided search K',K+ (mix 0), beside plain")
    ap.add_argument("--item-ids", action="store_true",
                    help="the encoder's token also adds a per-item embedding (manifest model.encoder_input "
                         "\"codes_and_item\"), not only the item's code embeddings")
    ap.add_argument("--item-init", default=None,
                    help="--item-ids: start the item rows (and, with --dense-aux, the dense PRM's node rows: "
                         "a leaf is its item, an inner node the mean of its items) from these item "
                         "embeddings in WORK, e.g. sasrec_items.npy (sasrec.py)")
    ap.add_argument("--tie-leaf", action="store_true",
                    help="--dense-aux with --item-ids: a leaf's PRM row is its item's row of the encoder's input "
                         "table (one row per item, trained by both uses, as SASRec ties its tables); the saved "
                         "model holds the tied rows in both places, so its bundle is the usual dense format")
    ap.add_argument("--freeze-gen", default=None,
                    help="--dense-aux: train the PRM head alone on the generator of this trained model "
                         "(WORK/<name>.pt; a head it holds is not read), frozen in eval mode: the frozen "
                         "side of the frozen-vs-joint measurement")
    ap.add_argument("--init", default=None, help="start from this trained model's generator (WORK/<init>.pt)")
    ap.add_argument("--teacher", default=None,
                    help="--causal: a SASRec state dict in WORK (sasrec.py's <name>_best.pt) to distil from "
                         "(distill.py); it ships nowhere")
    ap.add_argument("--distill", type=float, default=0.0,
                    help="--teacher: weight of the generator's KL to the teacher's per-level distribution")
    ap.add_argument("--tau", type=float, default=1.0, help="--teacher: the teacher's softmax temperature")
    ap.add_argument("--prm-distill", type=float, default=0.0,
                    help="--teacher: also train an attention PRM with the path query (catalog-independent) "
                         "on the detached memory, listwise against the teacher's node masses; this weight")
    ap.add_argument("--prm-positions", type=int, default=512, help="--prm-distill: positions sampled per batch")
    ap.add_argument("--prm-heads", type=int, default=4, help="--prm-distill: the PRM's attention heads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = args.out or args.size
    if args.metric.startswith(("guided_", "head_")) and args.dense_aux <= 0:
        raise SystemExit(f"--metric {args.metric} needs --dense-aux > 0 (a PRM head to search with)")
    if args.freeze_gen and (args.dense_aux <= 0 or args.tie_leaf or args.init):
        raise SystemExit("--freeze-gen needs --dense-aux > 0, and takes neither --tie-leaf nor --init")
    if args.tie_leaf and (args.dense_aux <= 0 or not args.item_ids):
        raise SystemExit("--tie-leaf needs --dense-aux > 0 and --item-ids (the item rows the leaves share)")

    train_seqs, valid_pairs, n_items = log_mod.training_split(args.data, args.log)
    valid_pairs = log_mod.spread(valid_pairs, args.valid_users)
    sids = np.load(os.path.join(args.work, args.sids))
    if len(sids) != n_items:
        raise SystemExit(f"{args.sids} holds {len(sids)} SIDs, the data {n_items} items: not the same catalog")
    trie = Trie(sids)
    cfg = make_config(args.size, sids, trie, history=args.history)
    cfg.causal, cfg.dropout = args.causal, args.dropout
    if args.dense_aux > 0:
        cfg.prm_kind = "dense"
    if args.item_ids:
        cfg.item_ids = int(sids.shape[0])
    if args.prm_distill > 0:
        cfg.prm_heads = args.prm_heads
    model = Promise(cfg)
    distill = query = None
    if args.teacher:
        if not args.causal:
            raise SystemExit("--teacher needs --causal (the teacher scores every position of a chunk)")
        from .prm_attention import PathQuery
        query = PathQuery(trie, cfg.cmax, cfg.d) if args.prm_distill > 0 else None
        distill = {"teacher": distill_mod.Teacher(os.path.join(args.work, args.teacher), int(sids.shape[0]),
                                                  args.tau, cfg.history),
                   "tri": distill_mod.TrieIndex(trie, sids, cfg.cmax), "gen_w": args.distill,
                   "prm_w": args.prm_distill, "query": query, "positions": args.prm_positions,
                   "rng": torch.Generator().manual_seed(args.seed)}
    if args.item_init and not os.path.exists(os.path.join(args.work, f"{out}.ckpt")):
        emb = torch.from_numpy(np.load(os.path.join(args.work, args.item_init))).float()
        emb = emb * (0.1 / emb.std())                       # the code rows' scale
        with torch.no_grad():
            model.gen.enc_code_emb[cfg.levels * cfg.cmax:] = emb
            if args.dense_aux > 0:
                path = torch.from_numpy(trie.path.astype(np.int64))   # [items, L] node ids
                node = torch.zeros(trie.num_nodes, cfg.d)
                cnt = torch.zeros(trie.num_nodes)
                for b in range(cfg.levels):
                    node.index_add_(0, path[:, b], emb)
                    cnt.index_add_(0, path[:, b], torch.ones(len(emb)))
                model.prm.node.copy_(node / cnt.clamp(min=1)[:, None])
        print(f"item rows from {args.item_init}", flush=True)
    if args.init and not os.path.exists(os.path.join(args.work, f"{out}.ckpt")):
        init = torch.load(os.path.join(args.work, f"{args.init}.pt"))
        model.gen.load_state_dict({k[4:]: v for k, v in init.items() if k.startswith("gen.")})
        if args.dense_aux > 0 and "prm.node" in init:      # a train_dense_prm.py model: its head too
            model.prm.load_state_dict({k[4:]: v for k, v in init.items() if k.startswith("prm.")})
        print(f"generator{' and dense PRM' if 'prm.node' in init else ''} from {args.init}", flush=True)
    if args.freeze_gen:
        path = os.path.join(args.work, f"{args.freeze_gen}.pt")
        if not os.path.isfile(path):
            raise SystemExit(f"--freeze-gen {args.freeze_gen}: no trained model {path}")
        frozen = torch.load(path)
        try:
            model.gen.load_state_dict({k[4:]: v for k, v in frozen.items() if k.startswith("gen.")})
        except RuntimeError as e:
            lines = str(e).splitlines()
            first = (lines[1] if len(lines) > 1 else lines[0]).strip()
            first = first if len(first) <= 160 else first[:160] + "..."
            raise SystemExit(f"--freeze-gen {args.freeze_gen}: not a generator of this configuration ({first})")
        for p in model.gen.parameters():
            p.requires_grad_(False)
        print(f"generator frozen from {args.freeze_gen}", flush=True)
    if args.tie_leaf:   # leaf leaf0 + i is item leaf_item[i], whose row follows the L * C code rows
        model.prm.tie_leaves(model.gen.enc_code_emb, trie.level_start[cfg.levels],
                             cfg.levels * cfg.cmax + trie.leaf_item.astype(np.int64))
    dense = None
    if args.dense_aux > 0:
        ls = trie.level_start
        path_t = torch.from_numpy(trie.path.astype(np.int64))
        bounds = [(int(ls[b + 1]), int(ls[b + 2])) for b in range(trie.levels)]
        counts = np.bincount(np.concatenate([np.asarray(x, np.int64) for x in train_seqs]), minlength=len(sids))
        sampler = PrefixNegatives(bounds, args.dense_negatives, args.dense_sampling, counts, path_t, args.seed)
        dense = (path_t, bounds, sampler)
    g, r = model.n_params()
    if query is not None:   # exported as prm.path_emb [L*C+1, d], not the node table it folds into
        r = r - model.prm.node_emb.numel() + (cfg.levels * cfg.cmax + 1) * cfg.d
    print(f"{args.size}: generator {g} params, prm {r} params ({100 * r / g:.0f}% of generator), H={cfg.history}",
          flush=True)
    win = Chunks(train_seqs, cfg.history) if args.causal else Windows(train_seqs, cfg.history)
    if args.causal:
        print(f"{len(win.lens)} chunks, {win.n_targets} targets", flush=True)
    sids_t = torch.from_numpy(sids.astype(np.int64))
    trie_t = torch.from_numpy(trie.path)
    tables = beam_mod.TrieTables(trie, cfg.cmax)
    params = model.parameters() if args.prm_weight > 0 or args.dense_aux > 0 else model.gen.parameters()
    if args.freeze_gen:
        params = model.prm.parameters()
    if query is not None:
        params = (list(model.gen.parameters()) + [p for n, p in model.prm.named_parameters() if n != "node_emb"]
                  + list(query.parameters()))
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = 200
    st = {"epoch": 0, "pos": 0, "step": 0, "seen": 0, "best": -1.0, "best_epoch": 0, "train_seconds": 0.0,
          "perm_seed": int(rng.integers(1 << 62))}
    # warm-up, times st["lr_scale"]: halved (--lr-decay) after an epoch that does not beat the
    # best validation Recall@10 (the lambda reads `st`, also after a resume rebinds it)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * st.get("lr_scale", 1.0))
    ckpt = os.path.join(args.work, f"{out}.ckpt")
    curve = os.path.join(args.curve_dir, f"{out}_curve.jsonl")
    if os.path.exists(ckpt):
        c = torch.load(ckpt, weights_only=False)
        model.load_state_dict(c["model"])
        if query is not None:
            query.load_state_dict(c["query"])
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        st = c["state"]
        if distill is not None and "prm_rng" in c:
            distill["rng"].set_state(c["prm_rng"])
        unit = "batch" if args.causal else "window"
        print(f"resumed: epoch {st['epoch']} {unit} {st['pos']}, best valid {args.metric} {st['best']:.4f}",
              flush=True)
    elif os.path.exists(curve):
        os.remove(curve)
    if args.item_init and not st.get("item_init"):
        st["item_init"] = args.item_init    # acts at the start only: kept for finish()'s record

    def save():
        extra = {}
        if query is not None:
            extra = {"query": query.state_dict(), "prm_rng": distill["rng"].get_state()}
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "state": st,
                    **extra}, ckpt + ".tmp")
        os.replace(ckpt + ".tmp", ckpt)

    def finish(reason):
        best = os.path.join(args.work, f"{out}.best.pt")
        if os.path.exists(best):
            model.load_state_dict(torch.load(best))
        torch.save(model.state_dict(), os.path.join(args.work, f"{out}.pt"))
        with open(os.path.join(args.work, f"{out}.json"), "w") as f:
            json.dump({"size": args.size, "config": cfg.to_dict(), "sids": args.sids, "windows_seen": st["seen"],
                       "epochs": st["epoch"], "best_epoch": st["best_epoch"], f"valid_{args.metric}": st["best"],
                       "log": args.log,
                       "params_generator": g, "params_prm": r, "prm_weight": args.prm_weight,
                       "dense_aux": args.dense_aux, "tie_leaf": args.tie_leaf,
                       "freeze_gen": args.freeze_gen, "init": args.init, "item_init": st.get("item_init"),
                       "teacher": args.teacher, "distill": args.distill, "tau": args.tau,
                       **({"prm_training": {"query": "path", "head": "mlp", "distill": args.prm_distill,
                                            "positions": args.prm_positions, "teacher": args.teacher}}
                          if query is not None else {}),
                       "train_seconds": st["train_seconds"], "stopped": reason}, f, indent=1)
        print(f"saved {out}: {reason}", flush=True)

    t_run = time.time()
    t_ckpt = time.time()
    ema = None
    while True:
        if args.samples and st["seen"] >= args.samples:
            return finish(f"{st['seen']} windows")
        if st["epoch"] >= args.max_epochs:
            return finish(f"--max-epochs {args.max_epochs} reached (best epoch {st['best_epoch']})")
        if st["epoch"] - st["best_epoch"] >= args.patience and st["epoch"] > 0:
            return finish(f"plateau after epoch {st['epoch']} (best {st['best_epoch']})")
        if time.time() - t_run > args.minutes * 60:
            save()
            print(f"stopped at epoch {st['epoch']} window {st['pos']}: run again to resume", flush=True)
            return
        if args.causal:   # pos counts batches of this epoch's grouping, seen counts targets
            groups = win.epoch_batches(st["perm_seed"] + st["epoch"], args.batch_targets)
            n_units = len(groups)
        else:
            perm = np.random.default_rng(st["perm_seed"] + st["epoch"]).permutation(len(win))
            n_units = len(win)
        if args.freeze_gen:
            model.gen.eval()   # the frozen generator's memory as at inference (validation sets train())
        t0 = time.time()
        while st["pos"] < n_units:
            if args.causal:
                hist, mask, target = win.batch(groups[st["pos"]])
                out_l = causal_loss(model, sids_t, torch.from_numpy(hist), torch.from_numpy(mask),
                                    torch.from_numpy(target), dense, distill)
                gen, prm = out_l[0], out_l[1]
                accs, step_units, step_seen = list(out_l[2]) if len(out_l) > 2 else [], 1, int(mask.sum())
            else:
                idx = perm[st["pos"]:st["pos"] + args.batch]
                hist, mask, target = win.batch(idx)
                gen, prm, accs = losses(model, trie_t, sids_t, trie.level_start,
                                        torch.from_numpy(hist), torch.from_numpy(mask),
                                        torch.from_numpy(target), args.neg if args.prm_weight > 0 else 0, rng)
                step_units = step_seen = len(idx)
            if args.dense_aux > 0:
                loss = gen + args.dense_aux * prm
            elif distill is not None:
                loss = gen + args.prm_distill * prm if args.prm_distill > 0 else gen
            else:
                loss = gen + args.prm_weight * prm if args.prm_weight > 0 else gen
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            st["pos"] += step_units
            st["seen"] += step_seen
            st["step"] += 1
            cur = np.array([gen.item(), float(prm)] + accs)
            ema = cur if ema is None else 0.98 * ema + 0.02 * cur
            if st["step"] % (20 if args.causal else 200) == 0:
                el = st["train_seconds"] + time.time() - t0
                agr = " agree " + "/".join(f"{a:.2f}" for a in ema[2:]) if len(ema) > 2 else ""
                print(f"epoch {st['epoch']} unit {st['pos']}/{n_units} gen {ema[0]:.3f} prm {ema[1]:.3f}{agr} | "
                      f"{st['seen'] / max(el, 1e-9):.0f} targets/s", flush=True)
            if args.samples and st["seen"] >= args.samples:
                break
            if time.time() - t_ckpt > args.ckpt_minutes * 60:
                st["train_seconds"] += time.time() - t0
                t0 = time.time()
                save()
                t_ckpt = time.time()
            if time.time() - t_run > args.minutes * 60:
                break
        st["train_seconds"] += time.time() - t0
        if st["pos"] < n_units and not args.samples:
            continue   # out of time mid-epoch: the loop head saves and stops
        st["epoch"] += 1
        st["pos"] = 0
        v0 = time.time()
        val = beam_mod.recall_ndcg_pairs(model.gen, tables, valid_pairs, sids_t, ks=(10, 20))
        if args.dense_aux > 0:
            kb, kc = (int(x) for x in args.guided.split(","))
            val.update(beam_mod.guided_recall_ndcg_pairs(model.gen, model.prm, tables, valid_pairs, sids_t,
                                                         beams=kb, cands=kc))
        row = {"epoch": st["epoch"], "windows_seen": st["seen"], "gen_loss": float(ema[0]), "valid": val,
               "train_seconds": round(st["train_seconds"], 1), "valid_seconds": round(time.time() - v0, 1),
               "lr": args.lr * st.get("lr_scale", 1.0)}
        if distill is not None:
            row["prm_loss"] = float(ema[1])
            row["prm_teacher_agreement"] = [round(float(a), 4) for a in ema[2:]]   # per level (EMA)
        print(json.dumps(row), flush=True)
        with open(curve, "a") as f:
            f.write(json.dumps(row) + "\n")
        if val[args.metric] > st["best"]:
            st["best"], st["best_epoch"] = val[args.metric], st["epoch"]
            if query is not None:
                with torch.no_grad():
                    model.prm.node_emb.copy_(query.table())      # folded for export (--prm-query path)
            if args.dense_aux > 0:
                model.prm.materialize()                          # --tie-leaf: the leaves' rows saved
            torch.save(model.state_dict(), os.path.join(args.work, f"{out}.best.pt"))
        elif args.lr_decay < 1.0:
            st["lr_scale"] = st.get("lr_scale", 1.0) * args.lr_decay
            print(f"no new best: learning rate x{args.lr_decay} -> {args.lr * st['lr_scale']:.2e}", flush=True)
        save()


if __name__ == "__main__":
    main()
