"""Markdown table of models/results: popularity.json (`reference.py popularity`),
sasrec.json (`sasrec.py`) and the runtime's test-split evaluations ml1m.jsonl,
ml1m-large.jsonl (`results.sh`: `promise eval --json --per-level`), prm_alone.jsonl
(`reference.py prm-alone`: each bundle's PRM scoring every item, no beam), and the
published anchors (other papers' numbers, their protocol noted).

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
    p = os.path.join(d, "prm_alone.jsonl")
    if os.path.exists(p):
        for line in open(p):
            r = json.loads(line)
            if r["split"] == "test":
                who = "small" if r["bundle"] == "ml1m" else "large"
                rows.append((who, f"its PRM ({r['prm_kind']}) alone, every item scored, no beam", r))
    print("| model | search | Recall@5 | Recall@10 | NDCG@5 | NDCG@10 | true prefix kept, level 1 / 2 | ms / request |")
    print("|---|---|---|---|---|---|---|---|")
    for m, mode, r in rows:
        kept = r.get("true_prefix_kept_per_level")
        kept = " / ".join(f"{x:.4f}" for x in kept[:-1]) if kept else "-"
        ms = f"{r['ms_per_request']:.2f}" if "ms_per_request" in r else "-"
        print(f"| {m} | {mode} | {r['recall@5']:.4f} | {r['recall@10']:.4f} | {r['ndcg@5']:.4f} | "
              f"{r['ndcg@10']:.4f} | {kept} | {ms} |")
    print()
    print("Published anchors (numbers from the papers; protocols differ, take them as a range):")
    print()
    print("| model | Recall@10 | NDCG@10 | protocol |")
    print("|---|---|---|---|")
    for m, r10, n10, proto in PUBLISHED:
        print(f"| {m} | {r10} | {n10} | {proto} |")


# (model, Recall@10, NDCG@10, protocol): the closest published protocols to ours
PUBLISHED = [
    ("SASRec, tuned (LRURec paper)", "0.3181", "0.1902",
     "users and items with >= 5 interactions, leave-one-out, full ranking, seen items masked"),
    ("LRURec (LRURec paper)", "0.3264", "0.1930", "as above"),
    ("HSTU-large (generative-recommenders README)", "0.3294", "0.1893",
     "leave-one-out, full ranking"),
]


if __name__ == "__main__":
    main()
