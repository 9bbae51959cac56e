"""`baselines --log WORK/log.pkl --out DIR`: popularity and item-kNN on a split log, on the
protocol every other row of the log's table uses.

Protocol (as `sasrec.evaluate_pairs` and `promise eval --pairs`): every validation or test
example is in the denominator; the history's items are excluded from the ranking; a target
that is unknown to the catalog or repeats a history item is a miss; full ranking over every
item. Ties are broken by training popularity, then by catalog index (the runtime's rule
for equal scores is by index too).

- popularity: the training counts of each item.
- item-kNN: cosine similarity of two items' session sets in training (`X^T X` over the
  binary session x item matrix, divided by sqrt(n_a n_b)); an example's score for item j
  is sum over its last `w` history items h_k (k = 0 the most recent) of d^k sim(h_k, j);
  items with no co-occurrence fall back to popularity through the tie rule. The knobs
  (w, d) are chosen on validation over the grid below; the test split is read once, with
  the chosen pair.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from .log import restore
from .outputs import output, output_folder

WINDOWS = (1, 2, 3, 5, 10, 20, 50)
DECAYS = (1.0, 0.8, 0.5)
KS = (10, 20)


def popularity(train, n_items: int) -> np.ndarray:
    counts = np.zeros(n_items, dtype=np.int64)
    for s in train:
        np.add.at(counts, np.asarray(s, dtype=np.int64), 1)
    return counts


def tie_order(counts: np.ndarray) -> np.ndarray:
    """Each item's place in the tie-break order: the most popular first, then by index."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    place = np.empty(len(counts), dtype=np.int64)
    place[order] = np.arange(len(counts))
    return place


def _metrics(ranks, n: int) -> dict:
    """Recall/NDCG@k from the 0-based ranks of the hits (misses are absent) over n examples."""
    ranks = np.asarray(ranks, dtype=np.int64)
    out = {}
    for k in KS:
        hit = ranks[ranks < k]
        out[f"recall@{k}"] = float(len(hit) / max(n, 1))
        out[f"ndcg@{k}"] = float((1.0 / np.log2(hit + 2)).sum() / max(n, 1))
    return out


def _scored(pairs):
    """The examples that can be a hit: a known target that is not in the history."""
    return [(i, h, t) for i, (h, t) in enumerate(pairs) if t >= 0 and t not in set(h)]


def eval_popularity(pairs, place: np.ndarray) -> dict:
    ranks = []
    for _, h, t in _scored(pairs):
        hs = np.unique(np.asarray(h, dtype=np.int64))
        ranks.append(int(place[t]) - int((place[hs] < place[t]).sum()))
    return _metrics(ranks, len(pairs))


def cosine(train, n_items: int):
    """Item x item cosine similarity of the binary session x item matrix (self-similarity 0)."""
    from scipy import sparse
    rows, cols = [], []
    for u, s in enumerate(train):
        items = np.unique(np.asarray(s, dtype=np.int64))
        rows.append(np.full(len(items), u, dtype=np.int64))
        cols.append(items)
    r, c = np.concatenate(rows), np.concatenate(cols)
    x = sparse.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)),
                          shape=(len(train), n_items))
    co = (x.T @ x).tocsr()
    co.setdiag(0)
    co.eliminate_zeros()
    n = np.asarray(x.sum(0)).ravel()
    inv = 1.0 / np.sqrt(np.maximum(n, 1.0))
    sim = sparse.diags(inv) @ co @ sparse.diags(inv)
    return sim.astype(np.float32).tocsr()


def eval_iknn(pairs, sim, place: np.ndarray, w: int, d: float, batch: int = 256) -> dict:
    from scipy import sparse
    n_items = sim.shape[0]
    scored = _scored(pairs)
    ranks = []
    for b in range(0, len(scored), batch):
        chunk = scored[b:b + batch]
        r, c, v = [], [], []
        for row, (_, h, _) in enumerate(chunk):
            for k, item in enumerate(reversed(h[-w:])):
                r.append(row)
                c.append(item)
                v.append(d ** k)
        q = sparse.csr_matrix((np.asarray(v, dtype=np.float32), (r, c)),
                              shape=(len(chunk), n_items))
        s = (q @ sim).toarray()
        for row, (_, h, _) in enumerate(chunk):
            s[row, h] = -np.inf
        t = np.asarray([t for _, _, t in chunk], dtype=np.int64)
        ranks.extend(rank(s[row], int(t[row]), place) for row in range(len(chunk)))
    return _metrics(ranks, len(pairs))


def rank(s: np.ndarray, t: int, place: np.ndarray) -> int:
    """The 0-based rank of target t under scores s: the items scored higher, and where that
    could still be a hit (under max(KS)) the tied items ahead of it in the tie order."""
    better = int((s > s[t]).sum())
    if better < max(KS):
        better += int((place[s == s[t]] < place[t]).sum())
    return better


def main(argv=None):
    ap = argparse.ArgumentParser(prog="promise_train baselines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", required=True, help="a split log (WORK/log.pkl, written by `build`)")
    ap.add_argument("--out", required=True, help="folder for popularity.json and iknn.json")
    ap.add_argument("--dataset", default="", help="the dataset's name, for the result files")
    a = ap.parse_args(argv)
    lg = restore(a.log)
    n_items = len(lg.items)
    valid, test = lg.examples("valid"), lg.examples("test")
    counts = popularity(lg.train, n_items)
    place = tie_order(counts)
    common = {"dataset": a.dataset, "items": n_items, "valid_examples": len(valid),
              "test_examples": len(test), "test_unknown_targets": lg.unknown_targets("test"),
              "test_repeat_targets": sum(t >= 0 and t in set(h) for h, t in test),
              "protocol": "every example counted; history items excluded; an unknown or "
                          "repeated target is a miss; full ranking; ties by popularity, "
                          "then index"}
    output_folder(a.out, "--out")

    t0 = time.time()
    pop = {"model": "popularity (training counts)", **common,
           "valid": eval_popularity(valid, place), **eval_popularity(test, place),
           "seconds": round(time.time() - t0, 1)}
    _write(os.path.join(a.out, "popularity.json"), pop)
    print(f"popularity: valid R@20 {pop['valid']['recall@20']:.4f}, test R@20 {pop['recall@20']:.4f}")

    t0 = time.time()
    sim = cosine(lg.train, n_items)
    print(f"item-kNN: {sim.nnz} similar pairs, {time.time() - t0:.0f} s")
    grid = []
    for w in WINDOWS:
        for d in DECAYS:
            if w == 1 and d != 1.0:
                continue                          # one item: the decay does nothing
            m = eval_iknn(valid, sim, place, w, d)
            grid.append({"window": w, "decay": d, **m})
            print(f"  valid w={w} d={d}: R@20 {m['recall@20']:.4f} N@20 {m['ndcg@20']:.4f}", flush=True)
    best = max(grid, key=lambda g: (g["recall@20"], g["ndcg@20"]))
    res = eval_iknn(test, sim, place, best["window"], best["decay"])
    iknn = {"model": "item-kNN (session co-occurrence cosine, last w items decayed by d)",
            **common, "window": best["window"], "decay": best["decay"],
            "chosen_on": "validation recall@20", "valid": {k: best[k] for k in res},
            "valid_grid": grid, **res, "similar_pairs": int(sim.nnz),
            "seconds": round(time.time() - t0, 1)}
    _write(os.path.join(a.out, "iknn.json"), iknn)
    print(f"item-kNN w={best['window']} d={best['decay']}: test R@20 {res['recall@20']:.4f} "
          f"N@20 {res['ndcg@20']:.4f}")


def _write(path: str, obj: dict) -> None:
    with output(path) as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
