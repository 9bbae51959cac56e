"""Approximate nearest-neighbour indexes over SASRec's item table, as a team would put one
on a device beside the encoder (issue 45): usearch HNSW with int8 storage (first-party C,
Swift, Java and Rust bindings, no BLAS) and faiss IVF-SQ8 (the reference for index
quality). Used by `promise_train dense-bench --index usearch|faiss-ivf`.

SASRec ranks items by the dot product <h, w_i>. Both libraries store int8 vectors for an
angular or L2 metric, so the table goes through the standard MIPS reduction: every item row
gets one more coordinate, sqrt(R^2 - |w_i|^2) with R the largest row norm, and the query a
0 there. Then |w'_i| = R for every item, and both the cosine and the L2 distance to
q' = [h, 0] rank items exactly as <h, w_i> does; the quantization is the only approximation
besides the graph's or the lists'.

The knob each index trades quality for time with (HNSW's ef, IVF's nprobe) is picked on
validation requests: the cheapest setting whose Recall@N against the exact top N (f32 dot
products over every item, the history excluded, the runtime's rule) reaches the target.
"""
from __future__ import annotations

import time

import numpy as np

KINDS = ("usearch", "faiss-ivf")


def augment(w: np.ndarray) -> np.ndarray:
    """[N, d] item rows -> [N, d + 1] rows of equal norm (the MIPS reduction)."""
    n2 = np.einsum("ij,ij->i", w, w)
    extra = np.sqrt(np.maximum(n2.max() - n2, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.concatenate([w, extra[:, None]], axis=1), dtype=np.float32)


def query_vec(h: np.ndarray) -> np.ndarray:
    return np.concatenate([h.astype(np.float32).ravel(), np.zeros(1, np.float32)])


class Index:
    """One built or loaded index; `top(h, k)` gives item indices (0-based), best first."""

    kind: str

    def top(self, h: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError

    def set_knob(self, v: int) -> None:
        raise NotImplementedError


class USearch(Index):
    kind = "usearch"
    knob_name = "ef"
    knobs = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)

    def __init__(self, ix):
        self.ix = ix

    @staticmethod
    def build(w_aug: np.ndarray, connectivity: int, threads: int) -> "USearch":
        from usearch.index import Index as UIndex
        ix = UIndex(ndim=w_aug.shape[1], metric="cos", dtype="i8", connectivity=connectivity,
                    expansion_add=128, expansion_search=64)
        ix.add(np.arange(w_aug.shape[0], dtype=np.uint64), w_aug, threads=threads)
        return USearch(ix)

    def save(self, path: str) -> None:
        self.ix.save(path)

    @staticmethod
    def load(path: str) -> "USearch":
        from usearch.index import Index as UIndex
        return USearch(UIndex.restore(path, view=False))

    def set_knob(self, v: int) -> None:
        self.ix.expansion_search = int(v)

    def top(self, h: np.ndarray, k: int) -> np.ndarray:
        return self.ix.search(query_vec(h), k, threads=1).keys


class FaissIVF(Index):
    kind = "faiss-ivf"
    knob_name = "nprobe"
    knobs = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)

    def __init__(self, ix):
        import faiss
        faiss.omp_set_num_threads(1)
        self.ix = ix

    @staticmethod
    def build(w_aug: np.ndarray, nlist: int, seed: int = 1) -> "FaissIVF":
        import faiss
        d = w_aug.shape[1]
        ix = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(d), d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                           faiss.METRIC_L2)
        rng = np.random.default_rng(seed)
        sample = w_aug[rng.choice(len(w_aug), min(len(w_aug), 64 * nlist), replace=False)]
        ix.train(sample)
        ix.add(w_aug)
        return FaissIVF(ix)

    def save(self, path: str) -> None:
        import faiss
        faiss.write_index(self.ix, path)

    @staticmethod
    def load(path: str) -> "FaissIVF":
        import faiss
        return FaissIVF(faiss.read_index(path))

    def set_knob(self, v: int) -> None:
        self.ix.nprobe = int(v)

    def top(self, h: np.ndarray, k: int) -> np.ndarray:
        _, i = self.ix.search(query_vec(h)[None, :], k)
        return i[0]


def load(kind: str, path: str) -> Index:
    return {"usearch": USearch, "faiss-ivf": FaissIVF}[kind].load(path)


def exact_feeds(w: np.ndarray, states: np.ndarray, histories, n: int) -> list[set[int]]:
    """The exact top n per query: f32 dot products over every item, history excluded."""
    out = []
    for h, hist in zip(states, histories):
        s = w @ h
        seen = set(hist)
        k = n + len(seen)
        top = np.argpartition(-s, min(k, len(s) - 1))[:k]
        top = top[np.argsort(-s[top], kind="stable")]
        out.append(set([int(i) for i in top if int(i) not in seen][:n]))
    return out


def tune(ix: Index, feed, states: np.ndarray, histories, exact: list[set[int]], n: int, target: float):
    """Walk the knob upward; the first setting whose mean Recall@n of `feed(h, history, n)`
    reaches `target` wins. Returns (knob, recall, the curve of (knob, recall, median ms))."""
    curve = []
    for v in ix.knobs:
        ix.set_knob(v)
        hits, lat = 0, []
        for h, hist, ex in zip(states, histories, exact):
            t = time.perf_counter()
            f = feed(h, hist, n)
            lat.append((time.perf_counter() - t) * 1e3)
            hits += len(ex.intersection(f))
        r = hits / (n * len(states))
        curve.append({"knob": v, "recall": r, "p50_ms": float(np.median(lat))})
        if r >= target:
            return v, r, curve
    return ix.knobs[-1], curve[-1]["recall"], curve
