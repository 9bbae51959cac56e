"""scaling.md and scaling.png from scaling_log.sh's DEST/scaling.jsonl (and, when there,
the PRM's exhaustive ceiling DEST/head_{valid,test}.json). Run by scaling_log.sh.

python scaling_plot.py DEST
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from promise_train.outputs import output  # noqa: E402  (scaling_log.sh sets PYTHONPATH)

d = sys.argv[1]
rows = [json.loads(x) for x in open(os.path.join(d, "scaling.jsonl"))]
head = {s: json.load(open(os.path.join(d, f"head_{s}.json")))
        for s in ("valid", "test") if os.path.exists(os.path.join(d, f"head_{s}.json"))}
name = rows[0]["bundle"]
# the feed's N: 20 on the session logs' pairs, 10 on MovieLens-1M (with @5 beside it)
K = 20 if "recall@20" in rows[0] else 10
k2 = 10 if K == 20 else 5
source = ("`promise bench --pairs`, 2,000 test histories" if K == 20
          else "`promise bench`, 2,000 MovieLens-1M test histories")


def label(c):
    return f"plain K'={c['beams']} (pool {c['candidates']})" if not c["prm"] else \
        f"PRM K'={c['beams']} K+={c['candidates']} mix {c['mix']:g}"


count = rows[0].get("examples", rows[0].get("users", 0))
lines = [f"Test-time scaling of `{name}` ({count:,} examples of each split per point; "
         f"written by models/train/scaling_log.sh). p50: one core, {source}.", ""]
for split in ("valid", "test"):
    lines += [f"### {split}", "",
              f"| search | R@{K} | N@{K} | R@{k2} | N@{k2} | true prefix kept per level | p50 ms |",
              "|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["split"] == split):
        kept = " / ".join(f"{x:.3f}" for x in r.get("true_prefix_kept_per_level", []))
        lines.append(f"| {label(r['config'])} | {r[f'recall@{K}']:.4f} | {r[f'ndcg@{K}']:.4f} | "
                     f"{r.get(f'recall@{k2}', float('nan')):.4f} | {r.get(f'ndcg@{k2}', float('nan')):.4f} | {kept} | "
                     f"{r['p50_ms']:.3f} |")
    if split in head:
        h = head[split]
        lines.append(f"| the PRM alone, every item scored (ceiling; {h['model']}; all {h['examples']:,} examples) | "
                     f"{h[f'recall@{K}']:.4f} | {h[f'ndcg@{K}']:.4f} | {h[f'recall@{k2}']:.4f} | {h[f'ndcg@{k2}']:.4f} | | |")
    lines.append("")
with output(os.path.join(d, "scaling.md")) as f:
    f.write("\n".join(lines))

fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
colors = {4: "tab:blue", 16: "tab:red"}
for k in (4, 16):
    for split, style in (("valid", "--"), ("test", "-")):
        pts = sorted((r["config"]["candidates"], r) for r in rows
                     if r["split"] == split and r["config"]["prm"] and r["config"]["beams"] == k)
        if not pts:
            continue
        ax[0].plot([c for c, _ in pts], [r[f"recall@{K}"] for _, r in pts], style, marker="o", color=colors[k],
                   label=f"PRM K'={k} ({split})")
        if split == "test":
            ax[1].plot([c for c, _ in pts], [r["p50_ms"] for _, r in pts], "-", marker="o", color=colors[k],
                       label=f"PRM K'={k}")
        plain = [r for r in rows if r["split"] == split and not r["config"]["prm"] and r["config"]["beams"] == k]
        if plain and split == "test":
            ax[0].axhline(plain[0][f"recall@{K}"], color=colors[k], ls=":", lw=1.2, label=f"plain K'={k} (test)")
            ax[1].axhline(plain[0]["p50_ms"], color=colors[k], ls=":", lw=1.2, label=f"plain K'={k}")
if "test" in head:
    ax[0].axhline(head["test"][f"recall@{K}"], color="k", ls="-.", lw=1, label="PRM alone, every item (test)")
for a in ax:
    a.set_xscale("log", base=2)
    a.set_xlabel("K+ (candidates the PRM scores per level)")
    a.grid(alpha=0.3)
ax[0].set_ylabel(f"Recall@{K}")
ax[1].set_ylabel("p50 ms per request (one core)")
ax[0].set_title(f"{name}: quality against K+")
ax[1].set_title("latency against K+")
ax[0].legend(fontsize=7)
ax[1].legend(fontsize=7)
fig.tight_layout()
with output(os.path.join(d, "scaling.png"), "wb") as f:
    fig.savefig(f, format="png", dpi=110)
print("\n".join(lines))
