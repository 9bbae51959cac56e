"""V-SKNN, the session-based kNN with vector weighting (Ludewig and Jannach, "Evaluation of
session-based recommendation algorithms", 2018; session-rec's `VMContextKNN`), the strongest
method on NowPlaying in their study: written here from the method's description, on the
protocol of `baselines` (every example counted, history items excluded, an unknown or
repeated target a miss, full ranking, ties by popularity then index).

For an example with history s_1..s_n (s_n the latest):
- the history as a vector: item s_i weighs i / n (the latest 1, a linear decay backwards;
  session-rec's `div` weighting), times idf(s_i) = log(sessions / sessions holding s_i) when
  `idf` is on;
- candidate neighbours: the training sessions holding any history item, of which the
  `sample` most recent are kept (a later training session is a more recent one: the log's
  sessions are in file order);
- similarity of a candidate session c: the dot product of the history vector with c's
  binary vector, over sqrt(n) * sqrt(|c|) (cosine); the `k` most similar are the
  neighbours;
- score of item j: the sum over neighbours c holding j of sim(c) / step(c), where step(c)
  is 1 when c holds s_n, 2 when its latest shared item is s_{n-1}, ... (session-rec's
  `div` score weighting).
The knobs (k, sample, idf) are chosen on a spread sample of the validation split (`--valid-sample`),
the test split read once with them.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from .baselines import _metrics, _scored, popularity, rank, tie_order
from .log import restore
from .outputs import output

GRID_K = (50, 100, 200, 500)
GRID_SAMPLE = (500, 1000, 5000)
GRID_IDF = (False, True)


class VSKNN:
    def __init__(self, train, n_items: int):
        from scipy import sparse
        rows, cols = [], []
        for u, s in enumerate(train):
            items = np.unique(np.asarray(s, dtype=np.int64))
            rows.append(np.full(len(items), u, dtype=np.int64))
            cols.append(items)
        r, c = np.concatenate(rows), np.concatenate(cols)
        one = np.ones(len(r), dtype=np.float32)
        self.x = sparse.csr_matrix((one, (r, c)), shape=(len(train), n_items))     # session x item
        self.xt = self.x.T.tocsr()                                                 # item x session
        self.size = np.asarray(self.x.sum(1)).ravel().astype(np.float32)
        df = np.asarray(self.x.sum(0)).ravel()
        self.idf = np.log(len(train) / np.maximum(df, 1.0)).astype(np.float32)
        self.n_items = n_items

    def scores(self, h, k: int, sample: int, idf: bool) -> np.ndarray:
        """Every item's score for history `h` (item indices, oldest first)."""
        h = np.asarray(h, dtype=np.int64)
        n = len(h)
        w = np.zeros(self.n_items, dtype=np.float32)
        # an item seen twice keeps its latest position's weight
        w[h] = (np.arange(1, n + 1, dtype=np.float32) / n)
        if idf:
            w[h] *= self.idf[h]
        hu = np.unique(h)
        cand = np.unique(self.xt[hu].indices)
        if len(cand) == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        if len(cand) > sample:
            cand = cand[-sample:]                       # the most recent sessions
        xc = self.x[cand]
        sim = (xc @ w) / (np.sqrt(np.float32(len(hu))) * np.sqrt(self.size[cand]))
        if len(cand) > k:
            top = np.argpartition(-sim, k - 1)[:k]
            cand, sim, xc = cand[top], sim[top], xc[top]
        keep = sim > 0
        cand, sim, xc = cand[keep], sim[keep], xc[keep]
        if len(cand) == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        # step: 1 + how far back the latest history item the neighbour holds lies
        held = xc[:, h].toarray() > 0                    # [neighbours, n]
        last = n - 1 - np.argmax(held[:, ::-1], axis=1)  # index of the latest shared item
        step = (n - last).astype(np.float32)
        return np.asarray((sim / step) @ xc).ravel()


def evaluate(model: VSKNN, pairs, place, k, sample, idf) -> dict:
    ranks = []
    for _, h, t in _scored(pairs):
        s = model.scores(h, k, sample, idf)
        s[np.asarray(h, dtype=np.int64)] = -np.inf
        ranks.append(rank(s, t, place))
    return _metrics(ranks, len(pairs))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="promise_train vsknn", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", required=True, help="a split log (WORK/log.pkl, written by `build`)")
    ap.add_argument("--out", required=True, help="the result file (vsknn.json)")
    ap.add_argument("--valid-sample", type=int, default=10000,
                    help="validation examples (spread over the split) the grid is chosen on; 0: all")
    ap.add_argument("--dataset", default="")
    a = ap.parse_args(argv)
    from .log import spread
    lg = restore(a.log)
    n_items = len(lg.items)
    valid, test = lg.examples("valid"), lg.examples("test")
    vs = spread(valid, a.valid_sample)
    place = tie_order(popularity(lg.train, n_items))
    t0 = time.time()
    model = VSKNN(lg.train, n_items)
    grid = []
    for idf in GRID_IDF:
        for sample in GRID_SAMPLE:
            for k in GRID_K:
                if k > sample:
                    continue
                t1 = time.time()
                m = evaluate(model, vs, place, k, sample, idf)
                grid.append({"k": k, "sample": sample, "idf": idf, **m, "seconds": round(time.time() - t1, 1)})
                print(f"  valid k={k} sample={sample} idf={idf}: R@20 {m['recall@20']:.4f} "
                      f"N@20 {m['ndcg@20']:.4f} ({time.time() - t1:.0f} s)", flush=True)
    best = max(grid, key=lambda g: (g["recall@20"], g["ndcg@20"]))
    full_valid = evaluate(model, valid, place, best["k"], best["sample"], best["idf"]) if vs is not valid else \
        {k: best[k] for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20")}
    res = evaluate(model, test, place, best["k"], best["sample"], best["idf"])
    out = {"model": "V-SKNN (session kNN, linear position weights, div score weighting)", "dataset": a.dataset,
           "items": n_items, "k": best["k"], "sample": best["sample"], "idf": best["idf"],
           "chosen_on": f"validation recall@20 over {len(vs)} spread examples", "valid": full_valid,
           "valid_grid": grid, **res, "test_examples": len(test), "seconds": round(time.time() - t0, 1)}
    with output(a.out) as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"V-SKNN k={best['k']} sample={best['sample']} idf={best['idf']}: valid R@20 "
          f"{full_valid['recall@20']:.4f}, test R@20 {res['recall@20']:.4f} N@20 {res['ndcg@20']:.4f}")


if __name__ == "__main__":
    main()
