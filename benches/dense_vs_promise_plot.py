"""The table and chart of benches/dense_vs_promise.sh: python dense_vs_promise_plot.py OUT,
with SIZES, CONTRAST_SIZES, INDEXES and NP_QUALITY from the environment as the script sets them.
Reads OUT/dense_<catalog>_<items>_<index>.json (`promise_train dense-bench`),
OUT/promise_<recipe>/bench_<items>.json (`promise bench --json`) and, where present, the
NowPlaying-1M files OUT/np_dense.json, OUT/np_<index>.json, OUT/np_promise.json and
OUT/np_promise_pick.json, OUT/np_promise_pick_in_place.json (their test quality from NP_QUALITY, results_log.sh's
promise_test.jsonl: its first row is the default search, its last the validation's pick);
writes OUT/summary.md and OUT/dense_vs_promise.png."""
import json
import os
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1]
sizes = [int(s) for s in os.environ.get("SIZES", "1000000").split()]
contrast_sizes = [int(s) for s in os.environ.get("CONTRAST_SIZES", "").split()]
indexes = os.environ.get("INDEXES", "usearch faiss-ivf").split()
NAMES = {"exhaustive": "SASRec + exhaustive int8 (ORT)", "usearch": "SASRec + usearch HNSW int8",
         "faiss-ivf": "SASRec + faiss IVF-SQ8"}


def load(*path):
    p = os.path.join(out, *path)
    return json.load(open(p)) if os.path.exists(p) else None


def dense_row(d):
    st = d.get("stages_p50_ms")
    ann = d.get("ann")
    knob = f", {ann['knob_name']} {ann['knob']} (recall {ann['tune_recall']:.3f} on {ann['tune_requests']} tuning requests)" if ann else ""
    return {"side": NAMES[d.get("index", "exhaustive")] + knob, "items": d["items"], "r20": d.get("recall@20"),
            "n20": d.get("ndcg@20"), "bpi": d.get("bytes_per_item", d["graph_bytes"] / d["items"]),
            "load_ms": d["load_ms"], "rss_mib": d["rss_after_load_kib"] / 1024, "file_mib": None,
            "build_s": ann["build_s"] if ann else None, "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"],
            "stages": f"encoder {st['encoder']:.3f}, index query {st['index_query']:.3f}" if st else "one graph",
            "kind": d.get("index", "exhaustive"), "series": NAMES[d.get("index", "exhaustive")]}


def promise_row(b, items, name, series, quality=None):
    st = b.get("stages_p50_ms")
    stages = "-"
    if st:
        stages = (f"encoder {st['encoder']:.3f}, decoder {sum(st['decoder']):.3f}, PRM {sum(st['prm']):.3f}, "
                  f"search {st['bookkeeping']:.3f}")
    c = b["config"]
    return {"side": f"{name} (K'={c['beams']}, K+={c['candidates']}, mix {c['mix']})", "items": items,
            "r20": quality[0] if quality else None, "n20": quality[1] if quality else None,
            "bpi": b["bundle_kib"] * 1024 / items, "load_ms": b["load_ms"],
            "rss_mib": (b["steady_rss_kib"] - b["rss_before_load_kib"]) / 1024, "build_s": None,
            "file_mib": b["rss_file_since_load_kib"] / 1024 if "rss_file_since_load_kib" in b else None,
            "p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"], "stages": stages, "kind": "promise", "series": series}


groups = []   # (catalog name, [rows])
q = []
if os.environ.get("NP_QUALITY"):
    q = [json.loads(line) for line in open(os.environ["NP_QUALITY"]) if line.strip()]
if load("np_dense.json"):
    rows = [dense_row(load("np_dense.json"))]
    rows += [dense_row(load(f"np_{ix}.json")) for ix in indexes if load(f"np_{ix}.json")]
    n = rows[0]["items"]
    for f, qi, label, series in (
            ("np_promise.json", 0, "promise-rt, default search",
             "promise-rt, per-prefix verifier, default search (K+=64)"),
            ("np_promise_pick.json", -1, "promise-rt, validation's pick",
             "promise-rt, per-prefix verifier, NowPlaying's pick"),
            ("np_promise_pick_in_place.json", -1, "promise-rt, validation's pick, tables in place",
             "promise-rt, per-prefix verifier, NowPlaying's pick, tables in place")):
        if load(f):
            qq = (q[qi]["recall@20"], q[qi]["ndcg@20"]) if q else None
            rows.append(promise_row(load(f), n, label, series, qq))
    groups.append(("NowPlaying-1M", rows))
for n in sizes:
    rows = [dense_row(d) for ix in ["exhaustive", *indexes] if (d := load(f"dense_aligned_{n}_{ix}.json"))]
    for recipe, label, series in (("path", "promise-rt, codes-only pair", "promise-rt, codes-only pair (K+=64)"),
                                  ("dense", "promise-rt, default recipe's shape",
                                   "promise-rt, per-prefix verifier, default search (K+=64)"),
                                  ("dense_in_place", "promise-rt, default recipe's shape, tables in place",
                                   "promise-rt, per-prefix verifier, default search (K+=64), tables in place")):
        b = load(f"promise_{recipe}", f"bench_{n}.json")
        if b:
            rows.append(promise_row(b, n, label, series))
    groups.append((f"synthetic {n:,}, rows around the states", rows))
for n in contrast_sizes:
    rows = [dense_row(d) for ix in indexes if (d := load(f"dense_clustered_{n}_{ix}.json"))]
    if rows:
        groups.append((f"synthetic {n:,}, rows around random centres (contrast)", rows))


def f(v, fmt):
    return "-" if v is None else format(v, fmt)


with open(os.path.join(out, "summary.md"), "w") as fh:
    fh.write("| catalog | side | test Recall@20 / NDCG@20 | bytes per item | RSS (MiB; promise-rt after its requests) "
             "| of which file-backed (MiB) | open + load (ms) "
             "| index build (s, 2 threads) | p50 (ms) | p99 (ms) | medians by stage (ms) |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|\n")
    for name, rows in groups:
        for r in rows:
            qual = f"{r['r20']:.4f} / {r['n20']:.4f}" if r["r20"] is not None else "-"
            fh.write(f"| {name} | {r['side']} | {qual} | {r['bpi']:.0f} | {r['rss_mib']:.1f} "
                     f"| {f(r['file_mib'], '.1f')} | {r['load_ms']:.0f} "
                     f"| {f(r['build_s'], '.0f')} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['stages']} |\n")

fig, ax = plt.subplots(1, 2, figsize=(11, 4))
styles = {"exhaustive": "s-", "usearch": "^-", "faiss-ivf": "v-", "promise": "o-"}
series = {}
for name, rows in groups:
    if "contrast" in name:
        continue
    for r in rows:
        series.setdefault(r["series"], ([], r["kind"]))[0].append(r)
for key, (rs, kind) in series.items():
    rs = sorted(rs, key=lambda r: r["items"])
    x = [r["items"] for r in rs]
    ax[0].plot(x, [r["p50_ms"] for r in rs], styles[kind], label=key)
    ax[1].plot(x, [r["rss_mib"] for r in rs], styles[kind], label=key)
ax[0].set_title("p50 per request, one core (ms)")
ax[1].set_title("RSS (MiB): dense sides after load, promise-rt after its requests")
for a in ax:
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("catalog items (NowPlaying-1M: 121k real; 1M: synthetic)")
    a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a.grid(alpha=0.3)
ax[1].legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(out, "dense_vs_promise.png"), dpi=110)
print(open(os.path.join(out, "summary.md")).read())
