"""The table and chart of benches/dense_vs_promise.sh: python dense_vs_promise_plot.py OUT
SIZE... reads OUT/dense_<size>.json (`promise_train dense-bench`), OUT/promise/bench_<size>.json
(`promise bench --json`) and, where present, OUT/np_dense.json, OUT/np_promise.json and
OUT/np_promise_plain.json (with test quality from $NP_QUALITY, results_log.sh's promise_test.jsonl);
writes OUT/summary.md and OUT/dense_vs_promise.png."""
import json
import os
import sys

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def promise_row(b, items, quality=None):
    return {"items": items, "r20": quality, "size_mib": b["bundle_kib"] / 1024, "load_ms": b["load_ms"],
            "rss_mib": (b["steady_rss_kib"] - b["rss_before_load_kib"]) / 1024,
            "p50_ms": b["p50_ms"], "p99_ms": b["p99_ms"]}


def dense_row(d):
    return {"items": d["items"], "r20": d.get("recall@20"), "size_mib": d["graph_bytes"] / 2**20,  # the graph holds the table
            "load_ms": d["load_ms"], "rss_mib": d["rss_after_load_kib"] / 1024,
            "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"]}


out, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
pairs = []
for n in sizes:
    pairs.append((f"synthetic {n:,}", dense_row(json.load(open(os.path.join(out, f"dense_{n}.json")))),
                  promise_row(json.load(open(os.path.join(out, "promise", f"bench_{n}.json"))), n)))
np_d, np_p = os.path.join(out, "np_dense.json"), os.path.join(out, "np_promise.json")
q = {}
if os.environ.get("NP_QUALITY"):
    for line in open(os.environ["NP_QUALITY"]):
        r = json.loads(line)
        q[(r["config"]["prm"], r["config"]["beams"])] = r["recall@20"]
extra = []
if os.path.exists(np_d) and os.path.exists(np_p):
    d = json.load(open(np_d))
    pairs.insert(0, ("NowPlaying-1M", dense_row(d),
                     promise_row(json.load(open(np_p)), d["items"], q.get((True, 16)))))
    pp = os.path.join(out, "np_promise_plain.json")
    if os.path.exists(pp):
        extra.append(("NowPlaying-1M, plain K'=16 (validation's pick)", dense_row(d),
                      promise_row(json.load(open(pp)), d["items"], q.get((False, 16)))))
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("| catalog | side | items | test Recall@20 | size (MiB) | open + load (ms) | RSS after load (MiB) "
            "| p50 (ms) | p99 (ms) |\n|---|---|---|---|---|---|---|---|---|\n")
    for name, d, p in pairs + extra:
        for side, r in (("SASRec int8 exhaustive (ORT)", d), ("promise-rt", p)):
            r20 = f"{r['r20']:.4f}" if r["r20"] is not None else "-"
            f.write(f"| {name} | {side} | {r['items']:,} | {r20} | {r['size_mib']:.1f} | {r['load_ms']:.0f} "
                    f"| {r['rss_mib']:.1f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} |\n")
        f.write(f"| {name} | dense / promise | | | {d['size_mib'] / p['size_mib']:.1f}x | "
                f"{d['load_ms'] / p['load_ms']:.1f}x | {d['rss_mib'] / max(p['rss_mib'], 1e-3):.1f}x "
                f"| {d['p50_ms'] / p['p50_ms']:.1f}x | {d['p99_ms'] / p['p99_ms']:.1f}x |\n")
fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
for side, idx, style in (("SASRec int8 exhaustive", 1, "s-"), ("promise-rt default", 2, "o-")):
    x = [p[idx]["items"] for p in pairs]
    ax[0].plot(x, [p[idx]["p50_ms"] for p in pairs], style, label=f"{side} p50")
    ax[1].plot(x, [p[idx]["rss_mib"] for p in pairs], style, label=side)
ax[0].set_title("request latency, one core (ms)")
ax[1].set_title("RSS after load (MiB)")
for a in ax:
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("catalog items")
    a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    a.grid(alpha=0.3)
    a.legend()
fig.tight_layout()
fig.savefig(os.path.join(out, "dense_vs_promise.png"), dpi=110)
print(open(os.path.join(out, "summary.md")).read())
