"""The dense alternative a user would pick, run as a user would deploy it: SASRec with
exhaustive int8 scoring over every item, one onnxruntime graph on one thread.

The graph (built here, no hand-written kernels): the history's rows are gathered from ONE
int8 item table (per-item scale; the table is shared by the input lookup and the
scoring, as SASRec ties them), dequantized, run through the encoder (onnxruntime's dynamic
int8 quantization of its MatMuls), and the last position's state is scored against every
item with an integer matmul (u8 x s8 -> s32, MatMulInteger) and cut to the top k by TopK.
The history's own items are excluded after TopK (k = N + the history's distinct items),
the runtime's rule.

    python -m promise_train dense-bench --sasrec WORK/sasrec_best.pt --log WORK/log.pkl \
        --max-len 50 --pairs test --requests 2000 --out bench.json [--quality]
    python -m promise_train dense-bench --items 1000000 --data DATA --out bench.json

--sasrec: trained weights (the catalog from --log); --items N: random weights of the same
architecture over N items (the scale bench; latency and memory only). Histories: a log's
examples (--pairs valid|test) or MovieLens-1M's test split (--data, item indices). Prints
and writes one JSON object: table bytes, open + load ms, RSS after load minus before,
p50/p99 ms, and with --quality Recall/NDCG@10/20 of the int8 graph over every example of
--pairs (full ranking, history excluded, unknown targets a miss).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from . import ann
from . import data as data_mod
from . import log as log_mod
from .outputs import check_destination, output, output_folder
from .sasrec import SASRec, pad_left

OPSET = 17


class _Encoder(torch.nn.Module):
    """SASRec.hidden after the item lookup: [1, L, d] embedded rows -> [1, d] last state."""

    def __init__(self, m: SASRec, L: int):
        super().__init__()
        self.m, self.L = m, L

    def forward(self, emb):
        m = self.m
        pos = m.pos(torch.arange(m.max_len - self.L, m.max_len))
        h = emb + pos
        causal = torch.triu(torch.full((self.L, self.L), float("-inf")), 1)
        return m.norm(m.enc(h, mask=causal))[:, -1, :]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def quantize_table(w: np.ndarray):
    """Per-item symmetric int8: w[i] ~ q[i] * s[i]; row 0 (padding) stays zero."""
    amax = np.abs(w).max(axis=1)
    s = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / s[:, None]), -127, 127).astype(np.int8)
    return q, s


def build(model: SASRec, L: int, path: str, head: str = "exhaustive") -> int:
    """Write the int8 graph to `path`; returns the item table's bytes (int8 + scales).
    head "exhaustive": the graph scores every item and cuts the top k (inputs x, k);
    "state": the encoder alone (emb [1, L, d] -> h [1, d]) for an ANN index to query, and
    the int8 table beside it in `path`.table.npz (q [N+1, d] int8, s [N+1] per-item scales):
    one copy serves the history lookup and the rerank of the index's candidates."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)   # the fused kernel has no ONNX form
    d = model.item.embedding_dim
    with tempfile.TemporaryDirectory() as tmp:
        f32, q8 = os.path.join(tmp, "enc.onnx"), os.path.join(tmp, "enc_q.onnx")
        with torch.no_grad():
            torch.onnx.export(_Encoder(model, L), (torch.zeros(1, L, d),), f32, input_names=["emb"],
                              output_names=["h"], opset_version=OPSET, dynamo=False)
        quantize_dynamic(f32, q8, weight_type=QuantType.QInt8)
        enc = onnx.compose.add_prefix(onnx.load(q8), "enc/")
    w = model.item.weight.detach().numpy().astype(np.float32)        # [N+1, d], row 0 = padding
    q, s = quantize_table(w)
    qt = np.ascontiguousarray(q.T)                                      # [d, N+1]
    inits = [numpy_helper.from_array(qt, "table"), numpy_helper.from_array(s * math.sqrt(d), "in_scale"),
             numpy_helper.from_array(s, "out_scale"), numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([w.shape[0]], np.int64), "end"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    front = [
        helper.make_node("Gather", ["table", "x"], ["rows_q"], axis=1),        # [d, 1, L] int8
        helper.make_node("Cast", ["rows_q"], ["rows_f"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["in_scale", "x"], ["row_scale"]),         # [1, L]
        helper.make_node("Mul", ["rows_f", "row_scale"], ["rows"]),
        helper.make_node("Transpose", ["rows"], ["enc/emb"], perm=[1, 2, 0]),  # [1, L, d]
    ]
    back = [
        helper.make_node("DynamicQuantizeLinear", ["enc/h"], ["h_q", "h_scale", "h_zp"]),
        helper.make_node("MatMulInteger", ["h_q", "table", "h_zp"], ["dots"]),  # [1, N+1] int32
        helper.make_node("Cast", ["dots"], ["dots_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["dots_f", "out_scale"], ["scaled"]),
        helper.make_node("Mul", ["scaled", "h_scale"], ["scores_all"]),
        helper.make_node("Slice", ["scores_all", "one", "end", "axis1"], ["scores"]),  # drop padding
        helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_items"], axis=1),
    ]
    g = enc.graph
    if head == "state":
        # the encoder alone (input emb [1, L, d], output h [1, d]); the caller keeps the one
        # int8 table for the input lookup and the index's rerank (state_table)
        onnx.save(enc, path)
        np.savez(path + ".table.npz", q=q, s=s)
        return q.nbytes + s.nbytes
    graph = helper.make_graph(
        front + list(g.node) + back, "sasrec_int8_exhaustive",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [1, L]),
         helper.make_tensor_value_info("k", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("top_scores", TensorProto.FLOAT, [1, None]),
         helper.make_tensor_value_info("top_items", TensorProto.INT64, [1, None])],
        initializer=inits + list(g.initializer))
    m = helper.make_model(graph, opset_imports=list(enc.opset_import))
    m.ir_version = enc.ir_version
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return qt.nbytes + s.nbytes


class Scorer:
    def __init__(self, path: str, L: int):
        import onnxruntime as ort
        o = ort.SessionOptions()
        o.intra_op_num_threads = o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        self.L = L

    def top(self, history: list[int], n: int) -> list[int]:
        seen = set(history)
        x = pad_left([history], self.L)
        k = np.array([n + len(seen)], np.int64)
        _, items = self.sess.run(None, {"x": x, "k": k})
        return [int(i) for i in items[0] if int(i) not in seen][:n]


class StateScorer:
    """SASRec's state in onnxruntime, then an ANN index: the history's rows gathered from
    the one int8 table, the encoder's last state h, the index's `rerank` x (N + seen)
    candidates, reranked by their exact int8 dot products with h from the same table."""

    def __init__(self, path: str, L: int, index, rerank: int):
        import onnxruntime as ort
        o = ort.SessionOptions()
        o.intra_op_num_threads = o.inter_op_num_threads = 1
        o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        t = np.load(path + ".table.npz")
        self.q, self.s = t["q"], t["s"]
        self.in_scale = self.s * math.sqrt(self.q.shape[1])
        self.L, self.index, self.rerank = L, index, rerank

    def state(self, history: list[int]) -> np.ndarray:
        x = pad_left([history], self.L)[0]
        emb = self.q[x].astype(np.float32) * self.in_scale[x, None]
        return self.sess.run(None, {self.input: emb[None]})[0][0]

    def feed(self, h: np.ndarray, history: list[int], n: int) -> list[int]:
        seen = set(history)
        k = n + len(seen)
        cand = self.index.top(h, self.rerank * k)
        cand = cand[cand >= 0]
        if self.rerank > 1:
            rows = cand + 1                                      # row 0 is the padding
            score = (self.q[rows].astype(np.float32) @ h) * self.s[rows]
            cand = cand[np.argsort(-score, kind="stable")]
        return [int(i) for i in cand if int(i) not in seen][:n]

    def top(self, history: list[int], n: int) -> list[int]:
        return self.feed(self.state(history), history, n)


def make_model(a, lg):
    """The SASRec whose table the side serves: trained (--sasrec) or random weights over
    --items N, its item rows (--catalog):
    - iid: the init's N(0, 0.02^2) rows, no structure (an index's hardest case);
    - clustered: a Gaussian mixture, --centres centres N(0, 0.02^2) and items around them
      at half that spread, in directions unrelated to the (random) encoder's states: the
      dot-product top 20 of a state falls across many clusters (a hard case too);
    - aligned: the mixture's centres are the encoder's own states for random histories, as
      training makes user states and item rows share one space (the realistic case). The
      rows of the first 4,096 items, which the MovieLens histories read, keep the init, so
      a request's state comes from the distribution the centres were drawn from."""
    torch.manual_seed(1)
    if a.sasrec:
        model = SASRec(len(lg.items), max_len=a.max_len)
        model.load_state_dict(torch.load(a.sasrec))
        return model
    model = SASRec(a.items, max_len=a.max_len)
    rng = np.random.default_rng(1)
    d = model.item.embedding_dim
    if a.catalog == "clustered":
        centres = rng.normal(0.0, 0.02, (a.centres, d)).astype(np.float32)
        rows = centres[rng.integers(0, a.centres, a.items)] + rng.normal(0.0, 0.01, (a.items, d)).astype(np.float32)
        with torch.no_grad():
            model.item.weight[1:] = torch.from_numpy(rows)
    elif a.catalog == "aligned":
        keep = min(4096, a.items)
        hist = [h for h, _ in examples_of(a, None, None) if h]
        model.eval()
        with torch.no_grad():
            states = []
            for i in range(0, a.centres, 256):
                batch = [hist[int(j)] for j in rng.integers(0, len(hist), min(256, a.centres - i))]
                x = torch.from_numpy(pad_left(batch, a.max_len))
                states.append(model.hidden(x)[:, -1, :].numpy())
            c = np.concatenate(states).astype(np.float32)
            c = 0.16 * c / np.linalg.norm(c, axis=1, keepdims=True)   # the init rows' norm, 0.02 x sqrt(64)
            n = a.items - keep
            rows = c[rng.integers(0, a.centres, n)] + rng.normal(0.0, 0.01, (n, d)).astype(np.float32)
            model.item.weight[1 + keep:] = torch.from_numpy(rows)
    return model


def examples_of(a, lg, split):
    if lg is not None:
        return lg.examples(split)
    ds = data_mod.load(a.data)
    return [(s[:-1], s[-1]) for s in ds.seqs]


def build_ann(a, lg, work: str) -> None:
    """--build-only: the state graph, the index, and the knob picked on validation requests
    (--pairs valid with --log; else the last --tune-requests histories, never timed), all
    in `work` (this runs in a child process so that the timed one's RSS is the load's)."""
    model = make_model(a, lg)
    model.eval()
    graph = os.path.join(work, "state.onnx")
    table_bytes = build(model, a.max_len, graph, head="state")
    w = model.item.weight.detach().numpy()[1:].astype(np.float32)
    del model
    t = time.perf_counter()
    if a.index == "usearch":
        ix = ann.USearch.build(ann.augment(w), a.connectivity, a.build_threads)
        params = {"connectivity": a.connectivity, "expansion_add": 128, "dtype": "i8", "metric": "cos (MIPS-augmented)"}
    else:
        ix = ann.FaissIVF.build(ann.augment(w), a.nlist)
        params = {"nlist": a.nlist, "quantizer": "SQ8", "metric": "L2 (MIPS-augmented)"}
    build_s = time.perf_counter() - t
    path = os.path.join(work, "index.bin")
    ix.save(path)
    if lg is not None:
        tune_hist = [h for h, _ in lg.examples("valid") if h][: a.tune_requests]
    else:
        tune_hist = [h for h, _ in examples_of(a, None, None) if h][-a.tune_requests:]
    sc = StateScorer(graph, a.max_len, ix, a.rerank)
    states = np.stack([sc.state(h) for h in tune_hist])
    exact = ann.exact_feeds(w, states, tune_hist, a.results)
    knob, recall, curve = ann.tune(ix, sc.feed, states, tune_hist, exact, a.results, a.recall_target)
    meta = {"index": a.index, "params": params, "build_s": build_s, "build_threads": a.build_threads,
            "table_bytes": table_bytes, "knob_name": ix.knob_name, "knob": knob, "tune_recall": recall,
            "tune_requests": len(tune_hist), "recall_target": a.recall_target, "rerank": a.rerank, "tune_curve": curve,
            "tune_on": "valid" if lg is not None else "the last histories, not timed"}
    with output(os.path.join(work, "index.json")) as f:
        json.dump(meta, f, indent=1)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="promise_train dense-bench")
    ap.add_argument("--sasrec", help="trained SASRec weights (state dict); the catalog from --log")
    ap.add_argument("--items", type=int, help="random weights over this many items (no --sasrec)")
    ap.add_argument("--catalog", choices=["iid", "clustered", "aligned"], default="iid",
                    help="with --items: item rows iid (the init), around --centres random centres, or around "
                         "centres that are the encoder's own states (see make_model)")
    ap.add_argument("--centres", type=int, default=4096)
    ap.add_argument("--log", help="a split log (log.pkl): the catalog and the --pairs examples")
    ap.add_argument("--pairs", choices=["valid", "test"], default="test")
    ap.add_argument("--data", default="data", help="MovieLens-1M (the test split's histories) without --log")
    ap.add_argument("--max-len", type=int, default=50, help="the history window L")
    ap.add_argument("--results", type=int, default=20)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--quality", action="store_true", help="also Recall/NDCG@10/20 over every --pairs example")
    ap.add_argument("--graph", help="where the graph goes (default: a temporary file)")
    ap.add_argument("--index", choices=["exhaustive", *ann.KINDS], default="exhaustive",
                    help="score every item in the graph, or query an ANN index with the graph's last state")
    ap.add_argument("--work", help="with an ANN --index: where its graph, index and pick are kept (reused)")
    ap.add_argument("--connectivity", type=int, default=16, help="usearch: HNSW's M")
    ap.add_argument("--nlist", type=int, default=4096, help="faiss-ivf: the inverted lists")
    ap.add_argument("--recall-target", type=float, default=0.95,
                    help="the ANN knob's pick: the cheapest reaching this Recall@--results against exact")
    ap.add_argument("--tune-requests", type=int, default=500)
    ap.add_argument("--rerank", type=int, default=2,
                    help="ANN: ask the index for this many times N + seen candidates and rerank them "
                         "by exact int8 dot products (1: the index's own order)")
    ap.add_argument("--build-threads", type=int, default=2, help="threads building the index (reported apart)")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if (a.sasrec is None) == (a.items is None):
        raise SystemExit("give exactly one of --sasrec (trained) or --items N (random weights)")
    if a.items is not None and a.items < 1:
        raise SystemExit(f"--items is {a.items}, expected at least 1")
    for name in ("requests", "results", "tune_requests", "rerank", "connectivity", "nlist", "centres", "build_threads"):
        if getattr(a, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} is {getattr(a, name)}, expected at least 1")
    if not 0.0 < a.recall_target <= 1.0:
        raise SystemExit(f"--recall-target is {a.recall_target}, expected a number in (0, 1]")
    if a.index != "exhaustive" and not a.work:
        raise SystemExit(f"--index {a.index} needs --work DIR (its graph and index are kept there)")
    check_destination(a.out)
    if a.index != "exhaustive":
        output_folder(a.work, "--work")
    lg = log_mod.restore(a.log) if a.log else None
    if a.sasrec and lg is None:
        raise SystemExit("--sasrec needs --log (its catalog)")
    if a.build_only:
        build_ann(a, lg, a.work)
        return
    examples = examples_of(a, lg, a.pairs)
    histories = [h for h, _ in examples if h]
    if a.index != "exhaustive" and lg is None:
        histories = histories[:-a.tune_requests]      # those tuned the knob
    if not histories:
        raise SystemExit("no history to time")
    tmp = tempfile.TemporaryDirectory()
    if a.index == "exhaustive":
        model = make_model(a, lg)
        n_items = model.item.num_embeddings - 1
        graph = a.graph or os.path.join(tmp.name, "dense.onnx")
        table_bytes = build(model, a.max_len, graph)
        del model
        meta, index_bytes = None, 0
    else:
        graph, ipath = os.path.join(a.work, "state.onnx"), os.path.join(a.work, "index.bin")
        if not (os.path.exists(ipath) and os.path.exists(os.path.join(a.work, "index.json"))):
            # built in a child process: this one's RSS then counts the load alone
            import subprocess
            import sys
            subprocess.run([sys.executable, "-m", "promise_train", "dense-bench", *(argv if argv is not None else sys.argv[1:]),
                            "--build-only"], check=True)
        meta = json.load(open(os.path.join(a.work, "index.json")))
        table_bytes, index_bytes = meta["table_bytes"], os.path.getsize(ipath)
        n_items = len(lg.items) if lg is not None else a.items
    import gc
    gc.collect()
    rss0 = rss_kib()
    t = time.perf_counter()
    if a.index == "exhaustive":
        sc = Scorer(graph, a.max_len)
    else:
        ix = ann.load(a.index, ipath)
        ix.set_knob(meta["knob"])
        sc = StateScorer(graph, a.max_len, ix, meta["rerank"])
    load_ms = (time.perf_counter() - t) * 1e3
    rss_load = rss_kib() - rss0
    for h in histories[:20]:
        sc.top(h, a.results)
    lat, enc_ms, query_ms = [], [], []
    for i in range(a.requests):
        h = histories[(20 + i) % len(histories)]
        t = time.perf_counter()
        if a.index == "exhaustive":
            sc.top(h, a.results)
        else:
            st = sc.state(h)
            t1 = time.perf_counter()
            sc.feed(st, h, a.results)
            t2 = time.perf_counter()
            enc_ms.append((t1 - t) * 1e3)
            query_ms.append((t2 - t1) * 1e3)
        lat.append((time.perf_counter() - t) * 1e3)
    lat = np.array(lat)
    side = {"exhaustive": "exhaustive int8 scoring in the graph", "usearch": "usearch HNSW int8",
            "faiss-ivf": "faiss IVF-SQ8"}[a.index]
    res = {"model": f"SASRec int8, {side} over {n_items} items (onnxruntime, 1 thread)", "index": a.index,
           "weights": "trained" if a.sasrec else f"random ({a.catalog} rows)", "items": n_items, "max_len": a.max_len,
           "results": a.results, "requests": a.requests, "table_bytes": table_bytes, "index_bytes": index_bytes,
           "graph_bytes": os.path.getsize(graph), "load_ms": load_ms, "rss_after_load_kib": rss_load,
           "rss_kib": rss_kib(), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}
    if a.index != "exhaustive":
        res.update({"stages_p50_ms": {"encoder": float(np.median(enc_ms)), "index_query": float(np.median(query_ms))},
                    "ann": meta, "bytes_per_item": (os.path.getsize(graph) + os.path.getsize(graph + ".table.npz")
                                                      + index_bytes) / n_items})
    else:
        res["bytes_per_item"] = os.path.getsize(graph) / n_items
    if a.quality:
        acc = {f"{m}@{k}": 0.0 for k in (10, 20) for m in ("recall", "ndcg")}
        for h, target in examples:
            top = sc.top(h, 20) if h else []
            if target >= 0 and target in top:
                r = top.index(target)
                for k in (10, 20):
                    if r < k:
                        acc[f"recall@{k}"] += 1
                        acc[f"ndcg@{k}"] += 1 / math.log2(r + 2)
        res.update({k: v / len(examples) for k, v in acc.items()})
        res["examples"] = len(examples)
        res["pairs"] = a.pairs
    print(json.dumps(res))
    with output(a.out) as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
