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


WIDTH = {"f32": 4, "f16": 2, "int8": 1}    # bytes per weight as the bundle stores a table


def catalog_bytes(m: dict, files: dict) -> dict:
    """Bytes per catalog item of everything in the bundle that grows with the catalog:
    catalog.bin (trie, item codes, item <-> leaf maps) and ids.bin as the files are, the
    per-item and per-prefix rows at the bundle's weight width (int8 rows keep f32 biases),
    beside the dense alternative's table (SASRec's item table in int8 with one f32 scale
    per row, at the same d)."""
    d = m["model"]["d_model"]
    items, nodes = m["sid"]["num_items"], m["sid"]["num_nodes"]
    w = WIDTH[m.get("numeric", "f32")]
    out = {"catalog.bin": files.get(m.get("catalog", "catalog.bin"), 0)}
    if m.get("ids"):
        out["ids.bin"] = files.get(m["ids"], 0)
    if m["model"].get("encoder_input", "codes") == "codes_and_item":
        out["encoder item rows"] = items * d * w
    kind = m["model"].get("prm_kind", "attention")
    if kind == "dense":
        out["PRM prefix rows + biases"] = nodes * (d * w + 4)
    elif m["model"].get("prm_query", "node") == "node":
        out["PRM node query rows"] = nodes * d * w
    per_item = {k: round(v / items, 1) for k, v in out.items()}
    return {"bytes_per_item": per_item, "bytes_per_item_total": round(sum(out.values()) / items, 1),
            "dense_alternative_bytes_per_item": d + 4,
            "dense_alternative": f"SASRec item table, int8 + f32 scale per row, d={d}"}


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
            m = json.load(f)
        files = {x["name"]: x["bytes"] for x in m.get("files", [])}
        print(json.dumps({**catalog_params(m), **catalog_bytes(m, files)}))


if __name__ == "__main__":
    main()
