"""Markdown table of models/results: popularity.json (`reference.py popularity`),
sasrec.json (`sasrec.py`) and the runtime's test-split evaluations ml1m.jsonl,
ml1m-large.jsonl (`results.sh`: `promise eval --json --per-level`).

python -m promise_train table models/results"""
import json
import os
import sys

def main(argv=None):
    d = (argv if argv is not None else sys.argv[1:])[0]
    rows = []
    for name in ("popularity.json", "sasrec.json", "sasrec_anchor.json"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            r = json.load(open(p))
            label = r["model"].split(" (")[0]
            if name == "sasrec.json":
                label += ", each user's last 201 items"
            elif name == "sasrec_anchor.json":
                label += ", every training target"
            if "epochs" in r:
                label += f" (ours, {r['epochs']} epochs, best at {r.get('best_epoch', r['epochs'])})"
            rows.append((label, "-", r))
    for b in ("ml1m", "ml1m-large"):
        p = os.path.join(d, f"{b}.jsonl")
        if os.path.exists(p):
            for line in open(p):
                r = json.loads(line)
                c = r["config"]
                mode = (f"PRM K'={c['beams']} K+={c['candidates']} mix={round(c['mix'], 4):g}" if c["prm"]
                        else f"plain beam K'={c['beams']}")
                rows.append(("small" if b == "ml1m" else "large", mode, r))
    print("| model | search | Recall@5 | Recall@10 | NDCG@5 | NDCG@10 | true prefix kept, level 1 / 2 | ms / request |")
    print("|---|---|---|---|---|---|---|---|")
    for m, mode, r in rows:
        kept = r.get("true_prefix_kept_per_level")
        kept = " / ".join(f"{x:.4f}" for x in kept[:-1]) if kept else "-"
        ms = f"{r['ms_per_request']:.2f}" if "ms_per_request" in r else "-"
        print(f"| {m} | {mode} | {r['recall@5']:.4f} | {r['recall@10']:.4f} | {r['ndcg@5']:.4f} | "
              f"{r['ndcg@10']:.4f} | {kept} | {ms} |")


if __name__ == "__main__":
    main()
