"""`synth-log --users U --items I --out LOG.tsv`: a small interaction log with structure a
model can learn (the pipeline's test input; no real data).

Items fall into `--clusters` groups; each user walks through a few groups, and within a
group mostly steps to the next item of it (item ids are strings like `sku-17`, timestamps
ISO 8601), so that next-item prediction is far above chance and the whole pipeline
(log -> SASRec -> SIDs -> generator -> PRM -> bundle) can be checked in minutes.
"""
from __future__ import annotations

import argparse
import datetime as dt

import numpy as np

from . import log as log_mod


def rows(users: int, items: int, clusters: int = 8, length: tuple[int, int] = (8, 30), seed: int = 0):
    rng = np.random.default_rng(seed)
    group = np.arange(items) % clusters
    members = [np.nonzero(group == c)[0] for c in range(clusters)]
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    out = []
    for u in range(users):
        n = int(rng.integers(length[0], length[1] + 1))
        c = int(rng.integers(clusters))
        pos = int(rng.integers(len(members[c])))
        t = t0 + dt.timedelta(seconds=int(rng.integers(10 ** 6)))
        for _ in range(n):
            if rng.random() < 0.15:                       # switch to another group
                c = int(rng.integers(clusters))
                pos = int(rng.integers(len(members[c])))
            else:                                         # the group's next item (or one further)
                pos = (pos + 1 + int(rng.random() < 0.2)) % len(members[c])
            out.append((f"user-{u}", f"sku-{int(members[c][pos])}", t.isoformat()))
            t += dt.timedelta(minutes=int(rng.integers(1, 120)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="promise_train synth-log")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--clusters", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="the TSV to write (user_id, item_id, timestamp)")
    a = ap.parse_args(argv)
    r = rows(a.users, a.items, a.clusters, seed=a.seed)
    log_mod.write(a.out, r)
    print(f"{a.out}: {len(r)} rows, {a.users} users, {a.items} items")


if __name__ == "__main__":
    main()
