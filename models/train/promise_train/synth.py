"""A synthetic bundle: random weights (untrained) over a random, valid SID table of any
shape, exported exactly like the trained models (export.py). For tests and benchmarks of
what the data cannot give: very wide codebooks, large catalogs.

python synth.py --items 4000 --codebook 65535,4 --out tests/data/wide [--numeric int8]
python synth.py --items 600 --codebook 16,16,8 --history 24 --causal --item-ids --out tests/data/causal
python synth.py --items 1000000 --codebook 256,256,256,256 --d 64 --heads 4 --ff 256 --layers 2 \
    --history 20 --numeric int8 --prm-query path --promise --out WORK/scale/1000000   (benches/scale.sh)
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from .export import (check_against_torch, export_graphs, quantize, write_catalog,
                    write_container, write_manifest)
from .model import Config, Promise
from .trie import Trie


def random_sids(items, codebook, rng):
    """`items` distinct SIDs, codes uniform in each level's codebook (vectorised: draw,
    drop duplicates, draw the shortfall again; millions of items take seconds)."""
    space = int(np.prod([float(c) for c in codebook]))
    if items > space:
        raise SystemExit(f"{items} items do not fit the SID space of {space}")
    weights = np.cumprod([1] + [int(c) for c in codebook[::-1]])[:-1][::-1]   # mixed radix
    keys = np.empty(0, np.int64)
    while len(keys) < items:
        need = items - len(keys)
        draw = np.stack([rng.integers(0, c, need + need // 8 + 16) for c in codebook], 1)
        new = draw @ weights
        keys = np.unique(np.concatenate([keys, new]))
    keys = rng.permutation(keys)[:items]
    return np.stack([(keys // w) % c for w, c in zip(weights, codebook)], 1).astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--codebook", required=True, help="codes per level, e.g. 65535,4")
    ap.add_argument("--out", required=True)
    ap.add_argument("--numeric", default="f32", choices=["f32", "f16", "int8"])
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=16)
    ap.add_argument("--history", type=int, default=8)
    ap.add_argument("--layers", type=int, default=1, help="encoder and decoder layers each")
    ap.add_argument("--promise", action="store_true", help="also write OUT.promise (the one-file bundle)")
    ap.add_argument("--causal", action="store_true", help="a causal encoder (as the trained models)")
    ap.add_argument("--item-ids", action="store_true",
                    help="the encoder also reads an embedding per item (model.encoder_input \"codes_and_item\")")
    ap.add_argument("--prm-query", default="node", choices=["node", "path"],
                    help="path: the PRM's query as per-level code rows (no per-node table)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    codebook = [int(c) for c in args.codebook.split(",")]
    sids = random_sids(args.items, codebook, rng)
    trie = Trie(sids)
    cfg = Config(levels=len(codebook), codebook=codebook, history=args.history, num_nodes=trie.num_nodes,
                 d=args.d, heads=args.heads, ff=args.ff, enc_layers=args.layers, dec_layers=args.layers,
                 causal=args.causal, item_ids=args.items if args.item_ids else 0)
    model = Promise(cfg).eval()
    with torch.no_grad():
        # untrained norm gains are all ones: the ONNX exporter would merge identical
        # initializers into one, so make every weight distinct
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    g, r = model.n_params()
    path_emb = None
    if args.prm_query == "path":
        # a random path table (padding row zero) and the node table it implies, which the
        # torch check reads
        width = max(codebook)
        path_emb = (0.1 * torch.randn(len(codebook) * width + 1, args.d)).numpy()
        path_emb[-1] = 0.0
        with torch.no_grad():
            model.prm.node_emb.copy_(torch.from_numpy(path_emb[trie.path_rows(width)].sum(1)))
        r = r - model.prm.node_emb.numel() + path_emb.size
    os.makedirs(args.out, exist_ok=True)
    export_graphs(model, cfg, args.out, path_emb, trie)
    if args.numeric != "f32":
        for n in ("encoder", "decoder", "prm"):
            quantize(os.path.join(args.out, f"{n}.onnx"), args.numeric)
    write_catalog(os.path.join(args.out, "catalog.bin"), trie, codebook)
    diffs = check_against_torch(model, cfg, args.out, seed=args.seed + 1,
                                trie=trie if path_emb is not None else None)
    write_manifest(args.out, cfg, trie, args.numeric,
                   {"name": os.path.basename(os.path.normpath(args.out)), "params_generator": g,
                    "params_prm": r, "dataset": f"synthetic: {args.items} items, codebook {codebook}, random weights"},
                   args.prm_query)
    if args.promise:
        write_container(args.out, os.path.normpath(args.out) + ".promise")
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"{args.out}: {size / 1e6:.2f} MB, {trie.num_nodes} nodes; max |onnxruntime - torch|: "
          + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


if __name__ == "__main__":
    main()
