"""Markdown table of models/results/*.json(l): python table.py models/results"""
import json
import os
import sys

d = sys.argv[1]
rows = []
for name in ("popularity.json", "sasrec.json"):
    p = os.path.join(d, name)
    if os.path.exists(p):
        r = json.load(open(p))
        label = r["model"].split(" (")[0]
        if "epochs" in r:
            label += f" (ours, {r['epochs']} epochs, {r['train_minutes']:.0f} min)"
        rows.append((label, "-", r))
for b in ("ml1m", "ml1m-large"):
    p = os.path.join(d, f"{b}.jsonl")
    if os.path.exists(p):
        for line in open(p):
            r = json.loads(line)
            mode = (f"PRM K'={r['beams']} K+={r['candidates']} mix={r['mix']}" if r["prm"]
                    else f"plain beam K'={r['beams']}")
            rows.append(("small" if b == "ml1m" else "large", mode, r))
print("| model | search | Recall@5 | Recall@10 | NDCG@5 | NDCG@10 |")
print("|---|---|---|---|---|---|")
for m, mode, r in rows:
    print(f"| {m} | {mode} | {r['recall@5']:.4f} | {r['recall@10']:.4f} | {r['ndcg@5']:.4f} | {r['ndcg@10']:.4f} |")
