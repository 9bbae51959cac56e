"""The reference implementation of the search (NumPy + onnxruntime), independent of the
Rust runtime: the oracle for the golden files and the CPU anchor users would otherwise pick.

It reads a bundle exactly as shipped (manifest.json, catalog.bin parsed here with NumPy
from the documented layout, the three ONNX graphs) and implements plain and PRM-guided
beam search with exact trie constraints, seen-item exclusion and the deterministic
tie-break: higher key first, ties to the smaller node id.

python reference.py eval --bundle ../ml1m --data DATA [--split test] [--configs ...]
python reference.py golden --bundle ../tiny --data DATA --out ../../tests/golden/tiny.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import onnxruntime as ort



class RefBundle:
    def __init__(self, d: str, threads: int = 1):
        self.dir = d
        self.man = json.load(open(os.path.join(d, "manifest.json")))
        b = open(os.path.join(d, self.man["catalog"]), "rb").read()
        assert b[:8] == b"PRMCATLG"
        ver, bom, n_items, L, n_nodes, hdr = struct.unpack_from("<6I", b, 8)
        assert (ver, bom, hdr) == (1, 0x0A0B0C0D, 64)
        off = 64

        def take(dtype, count):
            nonlocal off
            a = np.frombuffer(b, dtype=dtype, count=count, offset=off)
            off += a.nbytes
            off = (off + 7) // 8 * 8
            return a

        self.level_start = take("<u4", L + 2).astype(np.int64)
        self.first_child = take("<u4", n_nodes + 1).astype(np.int64)
        self.node_code = take("<u2", n_nodes).astype(np.int64)
        self.leaf_item = take("<u4", n_items).astype(np.int64)
        self.item_leaf = take("<u4", n_items).astype(np.int64)
        self.item_codes = take("<u2", n_items * L).reshape(n_items, L).astype(np.int64)
        assert off == len(b)
        self.L, self.n_items, self.n_nodes = L, n_items, n_nodes
        self.H = self.man["history"]
        self.C = max(self.man["sid"]["codebook"])
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        g = self.man["graphs"]
        self.enc = ort.InferenceSession(os.path.join(d, g["encoder"]), so, providers=["CPUExecutionProvider"])
        self.dec = ort.InferenceSession(os.path.join(d, g["decoder"]), so, providers=["CPUExecutionProvider"])
        self.prm = ort.InferenceSession(os.path.join(d, g["prm"]), so, providers=["CPUExecutionProvider"])
        # model.prm_query "path": the PRM reads each node's path rows (models/README.md)
        self.path_rows = None
        if self.man["model"].get("prm_query", "node") == "path":
            parent = np.zeros(n_nodes, np.int64)
            depth = np.zeros(n_nodes, np.int64)
            for dep in range(1, L + 1):
                depth[self.level_start[dep]:self.level_start[dep + 1]] = dep
            for node in range(int(self.level_start[L])):
                parent[self.first_child[node]:self.first_child[node + 1]] = node
            rows = np.full((n_nodes, L), L * self.C, np.int64)
            for node in range(1, n_nodes):
                x = node
                while x != 0:
                    lv = int(depth[x]) - 1
                    rows[node, lv] = lv * self.C + int(self.node_code[x])
                    x = int(parent[x])
            self.path_rows = rows

    def prm_inputs(self, nodes):
        if self.path_rows is None:
            return {"node_ids": nodes}
        return {"node_path": self.path_rows[nodes]}


def order(keys: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Indices sorted by key descending, then node ascending."""
    return np.lexsort((nodes, -keys.astype(np.float64)))


def leaf_range(rb: RefBundle, node: int, depth: int):
    """The leaves under `node` at `depth`: a contiguous node range (breadth-first ids)."""
    a, b = node, node + 1
    for _ in range(depth, rb.L):
        a, b = int(rb.first_child[a]), int(rb.first_child[b])
    return a, b


def encode(rb: RefBundle, history):
    """The encoder's memory and the history mask for the last H items of `history`."""
    L, H = rb.L, rb.H
    recent = list(history)[-H:]
    n = len(recent)
    item_col = rb.man["model"].get("encoder_input", "codes") == "codes_and_item"
    codes = np.zeros((1, H, L + item_col), np.int64)
    mask = np.zeros((1, H), np.float32)
    codes[0, H - n:, :L] = rb.item_codes[recent]
    if item_col:                                   # the item's own index after its codes
        codes[0, H - n:, L] = recent
    mask[0, H - n:] = 1.0
    return rb.enc.run(None, {"history_codes": codes, "history_mask": mask})[0], mask


def search(rb: RefBundle, history, beams: int, candidates: int, results: int, prm: bool, mix: float = 0.0):
    """One request, with the semantics of the Rust search module's docs (src/search/mod.rs):
    a prefix is valid while an unseen leaf lies under it; beams are the top K' by key, then
    more in key order until they hold N unseen leaves (the full-feed rule). Returns
    [(item, score)]: min(N, unseen items) of them."""
    L, H, C = rb.L, rb.H, rb.C
    if len(history) == 0:
        raise ValueError("empty history")
    seen_leaves = np.unique(rb.item_leaf[np.asarray(history, np.int64)])

    def unseen(node, depth):
        a, b = leaf_range(rb, node, depth)
        return (b - a) - int(np.searchsorted(seen_leaves, b) - np.searchsorted(seen_leaves, a))
    mem, mask = encode(rb, history)
    beam_nodes = np.array([0], np.int64)
    beam_cum = np.array([0.0], np.float32)
    beam_codes = np.zeros((1, max(L - 1, 1)), np.int64)
    for level in range(L):
        last = level == L - 1
        prefix = beam_codes.copy()
        prefix[:, level:] = 0
        lp = rb.dec.run(None, {"memory": mem, "history_mask": mask, "prefix_codes": prefix[:, :L - 1]})[0][:, level, :]
        nodes, parents, cums, left = [], [], [], []
        for i, node in enumerate(beam_nodes):
            for child in range(rb.first_child[node], rb.first_child[node + 1]):
                u = unseen(int(child), level + 1)
                if u == 0:
                    continue
                nodes.append(child)
                parents.append(i)
                # the runtime's LOGP_FLOOR: a log-probability below -80 counts as -80
                cums.append(np.float32(beam_cum[i] + max(lp[i, rb.node_code[child]], np.float32(-80.0))))
                left.append(u)
        if not nodes:
            return []
        nodes = np.array(nodes, np.int64)
        parents = np.array(parents, np.int64)
        cums = np.array(cums, np.float32)
        left = np.array(left, np.int64)
        top = order(cums, nodes)[:candidates]
        nodes, parents, cums, left = nodes[top], parents[top], cums[top], left[top]
        if prm:
            s = rb.prm.run(None, {"memory": mem, "history_mask": mask, **rb.prm_inputs(nodes)})[0].astype(np.float32)
            if mix == 0.0:
                keys = s
            else:
                keys = (np.float32(1.0) - np.float32(mix)) * s + np.float32(mix) * cums
        else:
            keys = cums
        ranked = order(keys, nodes)
        if last:
            keep = ranked[:results]
        else:
            k = min(beams, len(ranked))
            while k < len(ranked) and left[ranked[:k]].sum() < results:
                k += 1
            keep = ranked[:k]
        if last:
            return [(int(rb.leaf_item[nodes[j] - rb.level_start[L]]), float(keys[j])) for j in keep]
        new_codes = beam_codes[parents[keep]].copy()
        if level < L - 1:
            new_codes[:, level] = rb.node_code[nodes[keep]]
        beam_nodes, beam_cum, beam_codes = nodes[keep], cums[keep], new_codes
    return []


def metrics(ranked, target):
    out = {}
    for k in (5, 10):
        r = [i for i, _ in ranked[:k]]
        hit = target in r
        out[f"recall@{k}"] = float(hit)
        out[f"ndcg@{k}"] = 1.0 / math.log2(r.index(target) + 2) if hit else 0.0
    return out


def split_rows(ds, split):
    rows = []
    for s in ds.seqs:
        if split == "test":
            rows.append((s[:-1], s[-1]))
        else:
            rows.append((s[:-2], s[-2]))
    return rows


def parse_config(text):
    """'plain:K':N' or 'prm:K':K+:N[:mix]'."""
    p = text.split(":")
    if p[0] == "plain":
        b, n = int(p[1]), int(p[2])
        return dict(beams=b, candidates=max(b, n), results=n, prm=False, mix=0.0)
    b, c, n = int(p[1]), int(p[2]), int(p[3])
    return dict(beams=b, candidates=max(c, n), results=n, prm=True, mix=float(p[4]) if len(p) > 4 else 0.0)


def evaluate(rb, rows, cfg):
    acc = {"recall@5": 0.0, "recall@10": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0}
    t0 = time.perf_counter()
    for hist, target in rows:
        m = metrics(search(rb, hist, **cfg), target)
        for k in acc:
            acc[k] += m[k]
    el = time.perf_counter() - t0
    out = {k: v / len(rows) for k, v in acc.items()}
    out["ms_per_request"] = 1000 * el / len(rows)
    out["users"] = len(rows)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["eval", "golden", "popularity", "bench", "prm-alone"])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--dump")
    ap.add_argument("--bundle")
    ap.add_argument("--data", default="data")
    ap.add_argument("--split", default="test", choices=["test", "valid"])
    ap.add_argument("--configs", default="plain:4:10,prm:4:16:10")
    ap.add_argument("--users", type=int, default=0, help="evaluate the first N users only (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--golden-users", type=int, default=60)
    args = ap.parse_args()
    if args.cmd != "golden":
        from . import data as data_mod
        ds = data_mod.load(args.data)
        rows = split_rows(ds, args.split)
        if args.users:
            rows = rows[: args.users]
    if args.cmd == "popularity":
        counts = np.bincount(np.concatenate([s[:-2] for s in ds.seqs]), minlength=ds.n_items)
        pop = np.lexsort((np.arange(ds.n_items), -counts))
        acc = {"recall@5": 0.0, "recall@10": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0}
        for hist, target in rows:
            seen = set(hist)
            ranked = [(int(i), 0.0) for i in pop[:len(seen) + 10] if int(i) not in seen][:10]
            for k, v in metrics(ranked, target).items():
                acc[k] += v
        res = {k: v / len(rows) for k, v in acc.items()}
        print(json.dumps({"model": "popularity", "split": args.split, **res}))
        return
    rb = RefBundle(args.bundle, args.threads)
    if args.cmd == "prm-alone":
        # the bundle's PRM as a dense model: every item's leaf scored, no beam, seen items
        # excluded, ties to the smaller node (the search's rule)
        top = rb.level_start[rb.L]
        leaves = np.arange(top, rb.level_start[rb.L + 1], dtype=np.int64)
        items = rb.leaf_item[leaves - top]
        acc = {"recall@5": 0.0, "recall@10": 0.0, "ndcg@5": 0.0, "ndcg@10": 0.0}
        for hist, target in rows:
            mem, mask = encode(rb, hist)
            s = rb.prm.run(None, {"memory": mem, "history_mask": mask, **rb.prm_inputs(leaves)})[0]
            s = s.reshape(-1).astype(np.float64)
            s[np.isin(items, np.asarray(hist))] = -np.inf
            ranked = [(int(items[i]), float(s[i])) for i in order(s, leaves)[:10]]
            for k, v in metrics(ranked, target).items():
                acc[k] += v
        res = {k: v / len(rows) for k, v in acc.items()}
        print(json.dumps({"model": "the bundle's PRM alone, every item scored (no beam)",
                          "bundle": os.path.basename(os.path.normpath(args.bundle)),
                          "prm_kind": rb.man["model"].get("prm_kind", "attention"),
                          "split": args.split, "users": len(rows), **res}))
        return
    if args.cmd == "bench":
        # the same requests as `promise bench`: test-split histories after 20 warm-up users
        cfg = parse_config(args.configs.split(",")[0])
        warm = 20
        for h, _ in rows[:warm]:
            search(rb, h, **cfg)
        lat, lists = [], []
        for i in range(args.requests):
            h, _ = rows[(warm + i) % len(rows)]
            t = time.perf_counter()
            res = search(rb, h, **cfg)
            lat.append(1000 * (time.perf_counter() - t))
            lists.append([it for it, _ in res])
        lat.sort()
        pct = lambda p: lat[round((len(lat) - 1) * p)]
        print(json.dumps({"bundle": rb.man["name"], "config": args.configs.split(",")[0], "requests": args.requests,
                          "p50_ms": pct(0.5), "p99_ms": pct(0.99), "requests_per_s": 1000 * len(lat) / sum(lat)}))
        if args.dump:
            with open(args.dump, "w") as f:
                for items in lists:
                    f.write(json.dumps(items, separators=(",", ":")) + "\n")
        return
    if args.cmd == "eval":
        results = []
        for text in args.configs.split(","):
            cfg = parse_config(text)
            res = evaluate(rb, rows, cfg)
            line = {"bundle": rb.man["name"], "split": args.split, "config": text, **cfg, **res}
            print(json.dumps(line), flush=True)
            results.append(line)
        if args.out:
            with open(args.out, "a") as f:
                for r in results:
                    f.write(json.dumps(r) + "\n")
    else:
        # golden: synthetic histories (the MovieLens licence forbids committing real ones),
        # fixed seed, lengths from 1 (mostly padding) to 3x the model's window
        rng = np.random.default_rng(20260101)
        lengths = [1, 2, 5, 12, rb.H - 1, rb.H, rb.H + 7, 3 * rb.H]
        hists = [[int(i) for i in rng.choice(rb.n_items, size=lengths[u % len(lengths)], replace=False)]
                 for u in range(args.golden_users)]
        # histories of every item but 0, 1, 3, 9, 10 or 11 (the full-feed rule at work),
        # in item order, written to the file as the items they leave out ("all_but")
        all_but = [sorted(int(i) for i in rng.choice(rb.n_items, size=k, replace=False))
                   for k in [0, 1, 3, 9, 10, 11]]
        hists += [[i for i in range(rb.n_items) if i not in set(a)] for a in all_but]
        configs = ["plain:2:2", "plain:4:10", "prm:2:4:4", "prm:4:8:5", "prm:4:16:10",
                   "prm:8:32:10", "prm:4:16:10:0.5", "prm:1:4:3"]
        out = {"bundle": rb.man["name"], "tie_break": "score descending, then node id ascending",
               "configs": []}
        for text in configs:
            cfg = parse_config(text)
            cases = []
            for u, hist in enumerate(hists):
                res = search(rb, hist, **cfg)
                case = {"user": u, "items": [i for i, _ in res], "scores": [s for _, s in res]}
                if u < args.golden_users:
                    case["history"] = hist
                else:
                    case["all_but"] = all_but[u - args.golden_users]
                cases.append(case)
            out["configs"].append({"name": text, **cfg, "cases": cases})
        with open(args.out, "w") as f:
            json.dump(out, f, separators=(",", ":"))
        print(f"wrote {args.out}: {len(configs)} configs x {len(hists)} histories")


if __name__ == "__main__":
    main()
