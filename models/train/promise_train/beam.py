"""Batched, trie-constrained beam search in torch over many users at once: the training
pipeline's fast validation metric (and the on-policy candidate pools of the PRM phase).
Plain beam search by cumulative log-prob; the seen-item filter at the last level only
(the runtime's exact rule, with the full-feed guarantee, is in src/search/mod.rs and
reference.py; for ranking checkpoints the difference is immaterial).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .model import enc_table


class TrieTables:
    """child[node, code] = child node id or -1, as a torch tensor; leaf -> item."""

    def __init__(self, trie, cmax):
        n = trie.num_nodes
        child = np.full((n, cmax), -1, np.int64)
        for node in range(trie.level_start[trie.levels]):
            for c in range(int(trie.first_child[node]), int(trie.first_child[node + 1])):
                child[node, int(trie.node_code[c])] = c
        self.child = torch.from_numpy(child)
        self.leaf0 = trie.level_start[trie.levels]
        self.leaf_item = torch.from_numpy(trie.leaf_item.astype(np.int64))
        self.code = torch.from_numpy(trie.node_code.astype(np.int64))


def history_batch(seqs, H, sids_t):
    """Right-aligned last-H windows: codes [B,H,L], mask [B,H]."""
    B = len(seqs)
    idx = np.zeros((B, H), np.int64)
    mask = np.zeros((B, H), np.float32)
    for i, s in enumerate(seqs):
        s = s[-H:]
        idx[i, H - len(s):] = s
        mask[i, H - len(s):] = 1.0
    return sids_t[torch.from_numpy(idx)], torch.from_numpy(mask)


@torch.no_grad()
def search(gen, tables, seqs, sids_t, beams=16, results=10):
    """Top `results` items per history (plain beam search): LongTensor [B, results]."""
    cfg = gen.cfg
    L, H = cfg.levels, cfg.history
    codes, mask = history_batch(seqs, H, enc_table(cfg, sids_t))
    B = len(seqs)
    mem = gen.encode(codes, mask)                                   # [B,H,d]
    node = torch.zeros(B, 1, dtype=torch.long)                      # [B,K]
    cum = torch.zeros(B, 1)
    pre = torch.zeros(B, 1, max(L - 1, 1), dtype=torch.long)
    for level in range(L):
        lp = gen.decode_grouped(mem, mask, pre[:, :, :L - 1])[:, :, level, :]   # [B,K,C]
        ch = tables.child[node]                                     # [B,K,C]
        score = torch.where(ch >= 0, cum[:, :, None] + lp, torch.tensor(-math.inf))
        if level == L - 1:
            items = torch.where(ch >= 0, tables.leaf_item[(ch - tables.leaf0).clamp(min=0)], 0)
            for b, s in enumerate(seqs):
                seen = torch.from_numpy(np.isin(items[b].numpy(), np.asarray(s)))
                score[b][seen] = -math.inf
            flat = score.reshape(B, -1)
            top = flat.topk(min(results, flat.shape[1]), dim=1).indices
            return items.reshape(B, -1).gather(1, top)
        flat = score.reshape(B, -1)
        val, top = flat.topk(min(beams, flat.shape[1]), dim=1)
        node, cum, pre = advance(tables, ch, pre, level, val, top, lp.shape[2])
    raise AssertionError("unreachable")


def advance(tables, ch, pre, level, val, top, width):
    """The beams kept at `level`: slots `top` [B,K] (parent * width + code) of the children
    `ch` [B,K_old,width] with cumulative scores `val` -> (nodes, cums, prefixes). A beam
    that fell on an invalid slot (fewer valid children than K) stays dead (cum -inf)."""
    parent = top // width
    node = ch.reshape(ch.shape[0], -1).gather(1, top)
    pre = pre.gather(1, parent[:, :, None].expand(-1, -1, pre.shape[2])).clone()
    alive = node >= 0
    node = node.clamp(min=0)
    pre[:, :, level] = torch.where(alive, tables.code[node], 0)
    return node, torch.where(alive, val, torch.tensor(-math.inf)), pre


def recall_ndcg(gen, tables, ds, sids_t, split="valid", users=None, beams=16, batch=256):
    """Recall@10 / NDCG@10 of plain beam search on the validation (s[:-2] -> s[-2]) or
    test split, over all users or the first `users`."""
    cut = 2 if split == "valid" else 1
    seqs = ds.seqs[:users] if users else ds.seqs
    return recall_ndcg_pairs(gen, tables, [(s[:-cut], s[-cut]) for s in seqs], sids_t, beams, batch, ks=(10,))


def count_hit(acc, prefix, top, target, ks):
    """Add one example's Recall@k / NDCG@k (`top`: its ranked items) to `acc`."""
    r = np.nonzero(top == target)[0]
    for k in ks:
        if len(r) and r[0] < k:
            acc[f"{prefix}recall@{k}"] += 1
            acc[f"{prefix}ndcg@{k}"] += 1 / math.log2(r[0] + 2)


def recall_ndcg_pairs(gen, tables, pairs, sids_t, beams=16, batch=256, ks=(10, 20)):
    """Recall@k / NDCG@k of plain beam search over (history, target) pairs: a target of -1
    (unknown to the catalog) or an empty history is a miss."""
    gen.eval()
    acc = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg")}
    live = [(h, t) for h, t in pairs if h and t >= 0]
    for b in range(0, len(live), batch):
        chunk = live[b:b + batch]
        top = search(gen, tables, [h for h, _ in chunk], sids_t, beams=beams, results=max(ks)).numpy()
        for i, (_, t) in enumerate(chunk):
            count_hit(acc, "", top[i], t, ks)
    gen.train()
    return {k: v / max(len(pairs), 1) for k, v in acc.items()}


@torch.no_grad()
def guided_search(gen, prm, tables, seqs, sids_t, beams=16, cands=256, mix=0.0, results=20):
    """The PRM-guided search over many users at once (a PRM with `score(mem, mask, nodes)`:
    the dense PRM): per level the pool is the top `cands` valid children by cum, the key is
    `(1 - mix) * prm + mix * cum` (mix 0: the PRM alone, the paper's), the top `beams` of
    the pool by key go on; the last level's pool (seen items removed) is ranked by the key.
    The runtime's rule (src/search/mod.rs) up to its full-feed fallback and the seen filter
    at the upper levels. Returns items [B, results] and which of them are real [B, results]."""
    cfg = gen.cfg
    L, H = cfg.levels, cfg.history
    codes, mask = history_batch(seqs, H, enc_table(cfg, sids_t))
    B = len(seqs)
    mem = gen.encode(codes, mask)
    node = torch.zeros(B, 1, dtype=torch.long)
    cum = torch.zeros(B, 1)
    pre = torch.zeros(B, 1, max(L - 1, 1), dtype=torch.long)
    for level in range(L):
        lp = gen.decode_grouped(mem, mask, pre[:, :, :L - 1])[:, :, level, :]   # [B,K,C]
        ch = tables.child[node]
        sc = torch.where(ch >= 0, cum[:, :, None] + lp, torch.tensor(-math.inf))
        if level == L - 1:
            items = torch.where(ch >= 0, tables.leaf_item[(ch - tables.leaf0).clamp(min=0)], 0)
            for b, s in enumerate(seqs):
                sc[b][torch.from_numpy(np.isin(items[b].numpy(), np.asarray(s)))] = -math.inf
        sc = sc.reshape(B, -1)
        k = min(cands, sc.shape[1])
        val, top = sc.topk(k, dim=1)
        pool = torch.where(torch.isfinite(val), ch.reshape(B, -1).gather(1, top), -1)
        p = prm.score(mem, mask, pool.clamp(min=0))
        key = (1.0 - mix) * p + mix * val if mix > 0 else p
        key = key.masked_fill(pool < 0, -math.inf)
        if level == L - 1:
            order = key.topk(min(results, k), dim=1).indices
            chosen = pool.gather(1, order)
            return tables.leaf_item[(chosen - tables.leaf0).clamp(min=0)], chosen >= 0
        order = key.topk(min(beams, k), dim=1).indices
        node, cum, pre = advance(tables, ch, pre, level, val.gather(1, order), top.gather(1, order), lp.shape[2])
    raise AssertionError("unreachable")


@torch.no_grad()
def head_top(gen, prm, tables, seqs, sids_t, results=20):
    """The dense PRM's last level alone over every item (no beam, the history's items
    excluded): items [B, results], best first (the exhaustive ceiling of the search)."""
    leaves = torch.arange(tables.leaf0, tables.leaf0 + len(tables.leaf_item))
    codes, mask = history_batch(seqs, gen.cfg.history, enc_table(gen.cfg, sids_t))
    mem = gen.encode(codes, mask)
    u = prm.user(mem[:, -1] * mask[:, -1].unsqueeze(-1))                 # the dense PRM's user state
    s = u @ prm.rows(leaves).T + prm.node_bias[leaves]                    # [B, items] in leaf order
    for i, h in enumerate(seqs):
        s[i][torch.from_numpy(np.isin(tables.leaf_item.numpy(), np.asarray(h)))] = -math.inf
    return tables.leaf_item[s.topk(results, dim=1).indices]


@torch.no_grad()
def guided_recall_ndcg_pairs(gen, prm, tables, pairs, sids_t, beams=16, cands=256, mix=0.0, batch=256,
                             ks=(10, 20), guided=True):
    """Recall@k / NDCG@k of `guided_search` over (history, target) pairs (`guided_*`), and
    of the PRM's last level alone over every item (`head_*`, the exhaustive ceiling: no
    beam), as recall_ndcg_pairs counts them (an unknown target or an empty history is a
    miss). guided=False: the head only."""
    gen.eval()
    kinds = ("guided_", "head_") if guided else ("head_",)
    acc = {f"{w}{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg") for w in kinds}
    live = [(h, t) for h, t in pairs if h and t >= 0]
    for b in range(0, len(live), batch):
        chunk = live[b:b + batch]
        seqs = [h for h, _ in chunk]
        tops = {"head_": head_top(gen, prm, tables, seqs, sids_t, max(ks)).numpy()}
        if guided:
            items, ok = guided_search(gen, prm, tables, seqs, sids_t, beams, cands, mix, max(ks))
            tops["guided_"] = torch.where(ok, items, -1).numpy()
        for i, (_, t) in enumerate(chunk):
            for w, top in tops.items():
                count_hit(acc, w, top[i], t, ks)
    gen.train()
    return {k: v / max(len(pairs), 1) for k, v in acc.items()}
