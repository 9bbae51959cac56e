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

from . import data as data_mod
from . import log as log_mod
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


def build(model: SASRec, L: int, path: str) -> int:
    """Write the int8 graph to `path`; returns the item table's bytes (int8 + scales)."""
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


def main(argv=None):
    ap = argparse.ArgumentParser(prog="promise_train dense-bench")
    ap.add_argument("--sasrec", help="trained SASRec weights (state dict); the catalog from --log")
    ap.add_argument("--items", type=int, help="random weights over this many items (no --sasrec)")
    ap.add_argument("--log", help="a split log (log.pkl): the catalog and the --pairs examples")
    ap.add_argument("--pairs", choices=["valid", "test"], default="test")
    ap.add_argument("--data", default="data", help="MovieLens-1M (the test split's histories) without --log")
    ap.add_argument("--max-len", type=int, default=50, help="the history window L")
    ap.add_argument("--results", type=int, default=20)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--quality", action="store_true", help="also Recall/NDCG@10/20 over every --pairs example")
    ap.add_argument("--graph", help="where the graph goes (default: a temporary file)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if (a.sasrec is None) == (a.items is None):
        raise SystemExit("give exactly one of --sasrec (trained) or --items N (random weights)")
    torch.manual_seed(1)
    lg = log_mod.restore(a.log) if a.log else None
    if a.sasrec:
        if lg is None:
            raise SystemExit("--sasrec needs --log (its catalog)")
        model = SASRec(len(lg.items), max_len=a.max_len)
        model.load_state_dict(torch.load(a.sasrec))
    else:
        model = SASRec(a.items, max_len=a.max_len)
    n_items = model.item.num_embeddings - 1
    if lg is not None:
        examples = lg.examples(a.pairs)
    else:
        ds = data_mod.load(a.data)
        examples = [(s[:-1], s[-1]) for s in ds.seqs]
    histories = [h for h, _ in examples if h]
    if not histories:
        raise SystemExit("no history to time")
    tmp = tempfile.TemporaryDirectory()
    graph = a.graph or os.path.join(tmp.name, "dense.onnx")
    table_bytes = build(model, a.max_len, graph)
    del model
    import gc
    gc.collect()
    rss0 = rss_kib()
    t = time.perf_counter()
    sc = Scorer(graph, a.max_len)
    load_ms = (time.perf_counter() - t) * 1e3
    rss_load = rss_kib() - rss0
    for h in histories[:20]:
        sc.top(h, a.results)
    lat = []
    for i in range(a.requests):
        h = histories[(20 + i) % len(histories)]
        t = time.perf_counter()
        sc.top(h, a.results)
        lat.append((time.perf_counter() - t) * 1e3)
    lat = np.array(lat)
    res = {"model": f"SASRec int8, exhaustive over {n_items} items (onnxruntime, 1 thread)",
           "weights": "trained" if a.sasrec else "random", "items": n_items, "max_len": a.max_len,
           "results": a.results, "requests": a.requests, "table_bytes": table_bytes,
           "graph_bytes": os.path.getsize(graph), "load_ms": load_ms, "rss_after_load_kib": rss_load,
           "rss_kib": rss_kib(), "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}
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
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
