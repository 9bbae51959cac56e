"""The table and plot of benches/scale.sh: python scale_plot.py OUT SIZE... reads
OUT/bench_<size>.json (`promise bench --json`) and writes OUT/summary.md and OUT/scale.png."""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out, sizes = sys.argv[1], [int(s) for s in sys.argv[2:]]
rows = []
for n in sizes:
    b = json.load(open(os.path.join(out, f"bench_{n}.json")))
    rows.append({
        "items": n,
        "bundle_mib": b["bundle_kib"] / 1024,
        "load_ms": b["load_ms"],
        "rss_mib": (b["steady_rss_kib"] - b["rss_before_load_kib"]) / 1024,
        "heap_mib": b["model_heap_kib"] / 1024,
        "p50_ms": b["p50_ms"],
        "p99_ms": b["p99_ms"],
        "allocs": b["allocs_per_request"],
    })
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write("| items | bundle (MiB) | open + load + session (ms) | RSS after load - before (MiB) "
            "| model heap (MiB) | p50 (ms) | p99 (ms) | allocations / request |\n")
    f.write("|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        f.write(f"| {r['items']:,} | {r['bundle_mib']:.1f} | {r['load_ms']:.0f} | {r['rss_mib']:.1f} "
                f"| {r['heap_mib']:.1f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['allocs']:g} |\n")
fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
x = [r["items"] for r in rows]
ax[0].plot(x, [r["load_ms"] for r in rows], "o-")
ax[0].set_title("open + load + session (ms)")
ax[1].plot(x, [r["bundle_mib"] for r in rows], "o-", label="bundle file")
ax[1].plot(x, [r["rss_mib"] for r in rows], "o-", label="RSS growth")
ax[1].plot(x, [r["heap_mib"] for r in rows], "o-", label="model heap")
ax[1].set_title("memory (MiB)")
ax[1].legend()
ax[2].plot(x, [r["p50_ms"] for r in rows], "o-", label="p50")
ax[2].plot(x, [r["p99_ms"] for r in rows], "o-", label="p99")
ax[2].set_title("request latency (ms), K'=16 K+=64")
ax[2].legend()
for a in ax:
    a.set_xscale("log")
    a.set_xlabel("catalog items")
    a.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(out, "scale.png"), dpi=110)
print(open(os.path.join(out, "summary.md")).read())
