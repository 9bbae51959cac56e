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
            r = np.nonzero(top[i] == t)[0]
            for k in ks:
                if len(r) and r[0] < k:
                    acc[f"recall@{k}"] += 1
                    acc[f"ndcg@{k}"] += 1 / math.log2(r[0] + 2)
    gen.train()
    return {k: v / max(len(pairs), 1) for k, v in acc.items()}
