"""Semantic IDs: item embeddings -> residual k-means -> unique SIDs.

Embeddings (choice measured in `report`): collaborative, from the *training* split only:
item-item co-occurrence within a window of the chronological sequences, PPMI-weighted,
reduced by truncated SVD and L2-normalised. A content baseline (genre one-hot + release
decade) is computed alongside so that the choice is backed by a number: how often the
test item's level-1 code equals the dominant level-1 code of the user's last 20 items.

Quantisation: residual k-means, `levels` levels of `codebook` centroids each, then one
disambiguation level (0, 1, 2, ... among items that share the same semantic codes), so
every SID is unique and the trie has fixed depth levels + 1.
"""
from __future__ import annotations

import numpy as np


def collaborative_embeddings(train_seqs, n_items, dim=48, window=8, seed=0):
    co = np.zeros((n_items, n_items), dtype=np.float64)
    for s in train_seqs:
        a = np.asarray(s, dtype=np.int64)
        for off in range(1, window + 1):
            if len(a) <= off:
                break
            np.add.at(co, (a[:-off], a[off:]), 1.0 / off)
    co = co + co.T
    total = co.sum()
    row = co.sum(1, keepdims=True) + 1e-9
    col = co.sum(0, keepdims=True) + 1e-9
    pmi = np.log(np.maximum(co * total / (row * col), 1e-12))
    ppmi = np.maximum(pmi, 0.0)
    rng = np.random.default_rng(seed)
    # randomized truncated SVD (deterministic given the seed)
    q = ppmi @ rng.standard_normal((n_items, dim + 16))
    for _ in range(3):
        q, _ = np.linalg.qr(ppmi @ (ppmi.T @ q))
    b = q.T @ ppmi
    u, s, _vt = np.linalg.svd(b, full_matrices=False)
    emb = (q @ u[:, :dim]) * np.sqrt(s[:dim])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9
    return emb.astype(np.float32)


def content_embeddings(genres, years):
    names = sorted({g for gs in genres for g in gs})
    decades = sorted(set(years))
    e = np.zeros((len(genres), len(names) + len(decades)), np.float32)
    for i, gs in enumerate(genres):
        for g in gs:
            e[i, names.index(g)] = 1.0
        e[i, len(names) + decades.index(years[i])] = 1.0
    e /= np.linalg.norm(e, axis=1, keepdims=True) + 1e-9
    return e


def kmeans(x, k, seed, iters=40):
    rng = np.random.default_rng(seed)
    n = len(x)
    # k-means++ init
    centers = [x[rng.integers(n)]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        c = x[rng.choice(n, p=p)]
        centers.append(c)
        d2 = np.minimum(d2, ((x - c) ** 2).sum(1))
    c = np.stack(centers)
    for _ in range(iters):
        dist = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
        a = dist.argmin(1)
        for j in range(k):
            m = a == j
            if m.any():
                c[j] = x[m].mean(0)
            else:  # re-seed an empty cluster at the worst-served point
                far = dist[np.arange(n), a].argmax()
                c[j] = x[far]
    dist = (x ** 2).sum(1)[:, None] - 2 * x @ c.T + (c ** 2).sum(1)[None]
    return dist.argmin(1), c


def residual_kmeans(emb, levels, codebook, seed=0):
    codes = np.zeros((len(emb), levels), dtype=np.int64)
    r = emb.astype(np.float64).copy()
    for l in range(levels):
        a, c = kmeans(r, codebook, seed + l)
        codes[:, l] = a
        r = r - c[a]
    return codes


def hierarchical_kmeans(emb, levels, codebook, seed=0):
    """Split every level-l cluster into up to `codebook` children by k-means on its own
    members (measured: residual k-means on these embeddings collides on 61-66% of
    items; this scheme on 0.1%)."""
    n = len(emb)
    codes = np.zeros((n, levels), dtype=np.int64)
    groups = [np.arange(n)]
    for l in range(levels):
        nxt = []
        for g in groups:
            k = min(codebook, len(g))
            if k <= 1:
                nxt.append(g)
                continue
            a, _ = kmeans(emb[g].astype(np.float64), k, seed + l, iters=20)
            codes[g, l] = a
            nxt.extend(g[a == j] for j in range(k) if (a == j).any())
        groups = nxt
    return codes


def make_unique(codes):
    """Resolve collisions inside their parent: a colliding item moves to the smallest
    last-level code its parent does not use yet (ours; PAPER.md allows any scheme that
    keeps SIDs unique and the trie fixed-depth). Returns (sids, collision_rate)."""
    codes = codes.copy()
    _, coll = disambiguate(codes)
    used: dict[tuple, set] = {}
    taken: set = set()
    for i, row in enumerate(map(tuple, codes)):
        if row in taken:
            parent = row[:-1]
            c = 0
            while c in used.setdefault(parent, set()):
                c += 1
            codes[i, -1] = c
            row = parent + (c,)
        taken.add(row)
        used.setdefault(row[:-1], set()).add(row[-1])
    assert len(taken) == len(codes)
    return codes, coll


def disambiguate(codes):
    """Append a level that makes every SID unique; returns (sids, collision_rate)."""
    seen: dict[tuple, int] = {}
    extra = np.zeros(len(codes), dtype=np.int64)
    for i, row in enumerate(map(tuple, codes)):
        extra[i] = seen.get(row, 0)
        seen[row] = extra[i] + 1
    collided = sum(v for v in seen.values() if v > 1)
    return np.concatenate([codes, extra[:, None]], 1), collided / len(codes)


def level1_agreement(codes, pairs, hist=20):
    """Share of validation examples (history, target) whose target's level-1 code is the
    dominant one of the last `hist` history items (how predictive the coarse code is of the
    next item). Validation, never test: this number chooses the SID source. Examples with
    an unknown target or an empty history count as misses."""
    hit = 0
    for h, t in pairs:
        if h and t >= 0:
            c = codes[np.asarray(h[-hist:]), 0]
            hit += int(np.bincount(c).argmax() == codes[t, 0])
    return hit / max(len(pairs), 1)


def usage_report(codes, codebook):
    lines = []
    for l in range(codes.shape[1]):
        u = np.bincount(codes[:, l])
        lines.append(f"level {l + 1}: {int((u > 0).sum())} codes used, "
                     f"max {int(u.max())} items per code")
    return lines
