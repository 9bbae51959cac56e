"""`params --bundle DIR`: a bundle's parameter count, and the share of it that grows with
the catalog (per-item and per-trie-node tables), read from its manifest.

What grows with the catalog:
- `model.encoder_input: "codes_and_item"`: one d_model row per item in the encoder's table;
- `model.prm_kind: "dense"`: one d_model row and one bias per trie node;
- `model.prm_query: "node"` (attention PRM): one d_model row per trie node.
"""
from __future__ import annotations

import argparse
import json
import os


def catalog_params(m: dict) -> dict:
    d = m["model"]["d_model"]
    items, nodes = m["sid"]["num_items"], m["sid"]["num_nodes"]
    grows = {}
    if m["model"].get("encoder_input", "codes") == "codes_and_item":
        grows["encoder item table"] = items * d
    kind = m["model"].get("prm_kind", "attention")
    if kind == "dense":
        grows["dense PRM node table + bias"] = nodes * (d + 1)
    elif m["model"].get("prm_query", "node") == "node":
        grows["PRM node query table"] = nodes * d
    total = m["model"]["params_generator"] + m["model"]["params_prm"]
    g = sum(grows.values())
    return {"bundle": m.get("name"), "items": items, "nodes": nodes,
            "params_generator": m["model"]["params_generator"], "params_prm": m["model"]["params_prm"],
            "params_total": total, "grows_with_catalog": grows, "params_growing": g,
            "share_growing": round(g / total, 4),
            "prm_over_generator": round(m["model"]["params_prm"] / m["model"]["params_generator"], 4)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", action="append", required=True, help="bundle directory (repeatable)")
    args = ap.parse_args(argv)
    for b in args.bundle:
        with open(os.path.join(b, "manifest.json")) as f:
            print(json.dumps(catalog_params(json.load(f))))


if __name__ == "__main__":
    main()
