"""Any interaction log in: the pipeline's one input form.

A log is a table with a user (or session) id, an item id and a timestamp per row, as CSV,
TSV or Parquet. Ids are any strings; a timestamp is a number (seconds, any epoch) or an
ISO 8601 date-time. Rows need not be sorted: each user's rows are ordered by timestamp,
ties by their order in the file (a stable sort).

Item indices: items are numbered 0, 1, ... in order of first appearance in the training
rows, and the bundle's id table (ids.bin, models/README.md "Item ids") keeps the external
id of every index, so the runtime speaks the app's ids.

Splits (`--split`):
- `loo`, leave-one-out per user: a user's last item is the test target (history: all
  before it), the second-last the validation target (history: all before it), the rest
  trains. Users with fewer than 3 rows only train.
- `files`, the log's own split: `--valid LOG` and `--test LOG` hold later sequences; every
  item of such a sequence after its first is a target, its history the sequence before it
  (the session protocol). A target or history item absent from the training rows is
  unknown to the model: such targets are counted and reported (they count as misses), such
  history items are skipped (as the runtime skips them).

A malformed log is a `LogError` naming the file, the row (1 = the first row after the
header) and the column.
"""
from __future__ import annotations

import csv
import datetime as dt
import math
import os
from dataclasses import dataclass, field

from .outputs import check_destination, output, output_folder


class LogError(ValueError):
    """A malformed interaction log: which file, row and column, and what was expected."""


MAX_ID_BYTES = 256     # the runtime's limit on an external id (ids.bin)


MAX_LINE_BYTES = 1 << 20   # one line of a CSV/TSV log, read before it is parsed
# a timestamp's magnitude: nanoseconds since 1970 reach 1e18 about the year 2286; anything
# larger (or NaN, or an infinity, or 1e400 which Python reads as one) is not a time
MAX_TIMESTAMP = 1e18


def _finite_time(t: float, text, where: str) -> float:
    if not (abs(t) <= MAX_TIMESTAMP):     # also NaN
        raise LogError(f"{where}: timestamp {_quote(text)} is not a finite number within "
                       f"+-{MAX_TIMESTAMP:.0e}")
    return t


def _quote(value, limit: int = 64) -> str:
    """A value as it goes into an error: repr, cut at `limit` characters."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + f"... ({len(r)} characters)"


def _timestamp(text: str, where: str) -> float:
    s = text.strip()
    try:
        t = float(s)
    except ValueError:
        t = None
    if t is not None:
        return _finite_time(t, text, where)
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise LogError(f"{where}: timestamp {_quote(text)} is neither a number nor an ISO 8601 "
                       "date-time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def _check_id(value, where: str, what: str) -> str:
    if value is None:
        raise LogError(f"{where}: the {what} is empty")
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise LogError(f"{where}: the {what} {_quote(bytes(value))} is binary and not UTF-8 text") from None
    elif not isinstance(value, str):
        if isinstance(value, float) and not math.isfinite(value):
            raise LogError(f"{where}: the {what} is {value}, expected an id")
        if not isinstance(value, (int, float)):
            raise LogError(f"{where}: the {what} is a {type(value).__name__}, expected text or a number")
    s = str(value)
    if not s:
        raise LogError(f"{where}: the {what} is empty")
    try:
        b = s.encode("utf-8")
    except UnicodeEncodeError:
        raise LogError(f"{where}: the {what} {_quote(s)} is not valid Unicode") from None
    if len(b) > MAX_ID_BYTES:
        raise LogError(f"{where}: the {what} is {len(b)} bytes, at most {MAX_ID_BYTES} allowed")
    if any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in s):
        raise LogError(f"{where}: the {what} {_quote(s)} holds a control character")
    return s


class _Lines:
    """A binary file's lines, each bounded and decoded on its own, so an error names the
    true line (1 = the header); `line` is the number of the last line handed out."""

    def __init__(self, f, path):
        self.f, self.path, self.line = f, path, 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = self.f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            raise StopIteration
        self.line += 1
        if len(raw) > MAX_LINE_BYTES:
            raise LogError(f"{self.path}: line {self.line} is longer than {MAX_LINE_BYTES} bytes "
                           "(a log row holds a user, an item and a timestamp)")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise LogError(f"{self.path}: line {self.line}, byte {e.start + 1}: not UTF-8 "
                           f"({_quote(raw[e.start:e.start + 4])}); save the log as UTF-8") from None


def _check_sep(sep: str | None) -> str | None:
    if sep is None:
        return None
    if sep == "":
        raise LogError("--sep '': expected a field separator such as ',' or '\\t' or '::'")
    if "\n" in sep or "\r" in sep or '"' in sep:
        raise LogError(f"--sep {_quote(sep)}: a separator cannot hold a newline or a quote")
    if len(sep) > 8:
        raise LogError(f"--sep {_quote(sep)}: at most 8 characters")
    return sep


def _split(lines, sep: str):
    """Records of `lines`: csv quoting for a one-character separator; a longer one (the
    MovieLens `.dat` '::') splits plainly, as those files are written."""
    if len(sep) == 1:
        return csv.reader(lines, delimiter=sep)
    return (ln.rstrip("\r\n").split(sep) for ln in lines)


def read_rows(path: str, user_col: str, item_col: str, time_col: str, sep: str | None = None):
    """The log's rows as a list of (user, item, timestamp), in file order."""
    sep = _check_sep(sep)
    if not os.path.isfile(path):
        raise LogError(f"{path}: no such file")
    cols = (user_col, item_col, time_col)
    if path.endswith(".parquet"):
        return _parquet_rows(path, cols)
    if sep is None:
        sep = "\t" if path.endswith((".tsv", ".tab")) else None
    csv.field_size_limit(MAX_LINE_BYTES)
    with open(path, "rb") as f:
        lines = _Lines(f, path)
        head = next(lines, "")
        if not head.strip():
            raise LogError(f"{path}: the file is empty (expected a header naming the columns "
                           f"{', '.join(cols)})")
        if sep is None:
            sep = "\t" if "\t" in head else ","
        try:
            header = next(iter(_split([head], sep)))
        except csv.Error as e:
            raise LogError(f"{path}: line 1 (the header): {e}") from None
        idx = []
        for c in cols:
            if c not in header:
                raise LogError(f"{path}: no column {c!r} in the header (it has {_quote(header, 200)}); "
                               "name the columns with --user-col/--item-col/--time-col, the separator with --sep")
            idx.append(header.index(c))
        rows = []
        reader = _split(lines, sep)
        n = 0
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise LogError(f"{path}: row {n + 1} (line {lines.line}): {e}") from None
            if not rec:
                continue
            n += 1
            where = f"{path}: row {n} (line {lines.line})"
            if len(rec) != len(header):
                raise LogError(f"{where} has {len(rec)} fields, the header {len(header)}")
            u = _check_id(rec[idx[0]], f"{where}, column {user_col!r}", "user id")
            i = _check_id(rec[idx[1]], f"{where}, column {item_col!r}", "item id")
            t = _timestamp(rec[idx[2]], f"{where}, column {time_col!r}")
            rows.append((u, i, t))
    if not rows:
        raise LogError(f"{path}: the header is there but no row follows")
    return rows


def _parquet_rows(path, cols):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LogError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds
        raise LogError(f"{path}: not a readable Parquet file ({_quote(str(e), 200)})") from None
    for c in cols:
        if c not in table.column_names:
            raise LogError(f"{path}: no column {c!r} (it has {_quote(table.column_names, 200)})")
    if table.num_rows == 0:
        raise LogError(f"{path}: the file holds no row")
    us, its, ts = (table.column(c).to_pylist() for c in cols)
    rows = []
    for n, (u, i, t) in enumerate(zip(us, its, ts), 1):
        where = f"{path}: row {n}"
        u = _check_id(u, f"{where}, column {cols[0]!r}", "user id")
        i = _check_id(i, f"{where}, column {cols[1]!r}", "item id")
        tw = f"{where}, column {cols[2]!r}"
        if isinstance(t, dt.datetime):
            t = (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()
        elif t is None:
            raise LogError(f"{tw}: the timestamp is empty")
        elif isinstance(t, (int, float)) and not isinstance(t, bool):
            t = _finite_time(float(t), t, tw)
        elif isinstance(t, str):
            t = _timestamp(t, tw)
        else:
            raise LogError(f"{tw}: the timestamp is a {type(t).__name__}, expected a number or a date-time")
        rows.append((u, i, t))
    return rows


def sequences(rows):
    """Per user, the item ids in time order (ties by file order); users in order of first
    appearance."""
    users: dict[str, int] = {}
    keyed = []
    for order, (u, i, t) in enumerate(rows):
        keyed.append((users.setdefault(u, len(users)), t, order, i))
    keyed.sort()
    seqs: list[list[str]] = [[] for _ in users]
    for uid, _t, _o, i in keyed:
        seqs[uid].append(i)
    return list(users), seqs


@dataclass
class Log:
    """A log, split: the catalog (external ids), the training sequences as indices, and
    the validation and test examples as (history, target) in external ids."""
    items: list[str]
    train: list[list[int]]
    valid: list[tuple[list[str], str]]
    test: list[tuple[list[str], str]]
    split: str
    n_rows: int
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        if not self.index:
            self.index = {s: i for i, s in enumerate(self.items)}

    def known(self, history: list[str]) -> list[int]:
        """The history as indices, unknown ids skipped (as the runtime skips them)."""
        return [self.index[s] for s in history if s in self.index]

    def examples(self, part: str):
        """(history indices, target index or -1 when the target is unknown) per example."""
        ex = self.valid if part == "valid" else self.test
        return [(self.known(h), self.index.get(t, -1)) for h, t in ex]

    def unknown_targets(self, part: str) -> int:
        ex = self.valid if part == "valid" else self.test
        return sum(t not in self.index for _, t in ex)

    def summary(self) -> dict:
        return {"split": self.split, "rows": self.n_rows, "items": len(self.items),
                "train_sequences": len(self.train),
                "train_targets": sum(max(len(s) - 1, 0) for s in self.train),
                "valid_examples": len(self.valid), "test_examples": len(self.test),
                "valid_unknown_targets": self.unknown_targets("valid"),
                "test_unknown_targets": self.unknown_targets("test")}


def _catalog(train_seqs_ext):
    items: dict[str, int] = {}
    for s in train_seqs_ext:
        for i in s:
            items.setdefault(i, len(items))
    return items


def load(path: str, split: str = "loo", valid: str | None = None, test: str | None = None,
         user_col: str = "user_id", item_col: str = "item_id", time_col: str = "timestamp",
         sep: str | None = None) -> Log:
    rows = read_rows(path, user_col, item_col, time_col, sep)
    _, seqs = sequences(rows)
    if split == "loo":
        if valid or test:
            raise LogError("--split loo takes one log; --valid/--test belong to --split files")
        train_ext, va, te = [], [], []
        for s in seqs:
            if len(s) < 3:
                train_ext.append(s)
                continue
            train_ext.append(s[:-2])
            va.append((s[:-2], s[-2]))
            te.append((s[:-1], s[-1]))
        # the catalog is every item of the log (a leave-one-out target is an item the
        # catalog holds, as in ML-1M's rule: order of first appearance in the file)
        items: dict[str, int] = {}
        for _u, i, _t in rows:
            items.setdefault(i, len(items))
    elif split == "files":
        if not (valid and test):
            raise LogError("--split files needs --valid LOG and --test LOG")
        train_ext = seqs
        items = _catalog(seqs)
        parts = []
        for p in (valid, test):
            _, ss = sequences(read_rows(p, user_col, item_col, time_col, sep))
            parts.append([(s[:k], s[k]) for s in ss for k in range(1, len(s))])
        va, te = parts
    else:
        raise LogError(f"--split {split!r}: expected loo or files")
    index = items
    names = list(items)
    train = [[index[i] for i in s] for s in train_ext]
    return Log(names, train, va, te, split, len(rows), index)


def write(path: str, rows) -> None:
    """Write rows (user, item, timestamp) as the pipeline's TSV form."""
    with output(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["user_id", "item_id", "timestamp"])
        for r in rows:
            w.writerow(r)


def save(log: Log, path: str) -> None:
    """The split log, for the pipeline's later steps (`--log WORK/log.pkl`); it stays in
    the work folder and ships nowhere."""
    import pickle
    with output(path, "wb") as f:
        pickle.dump(log, f, protocol=pickle.HIGHEST_PROTOCOL)


def restore(path: str) -> Log:
    import pickle
    with open(path, "rb") as f:
        log = pickle.load(f)
    if not isinstance(log, Log):
        raise LogError(f"{path}: not a split log written by `build`")
    return log


def write_pairs(log: Log, part: str, path: str) -> int:
    """The `part` examples as `promise eval --pairs` reads them: one line per example, the
    history's external ids then the target's, tab-separated (an id holds no tab: control
    characters are refused). Unknown ids stay: the runtime skips and counts them."""
    ex = log.valid if part == "valid" else log.test
    with output(path, "w", what="--pairs", encoding="utf-8", newline="\n") as f:
        for h, t in ex:
            f.write("\t".join([*h, t]) + "\n")
    return len(ex)


def training_split(data_dir: str, log_path: str | None):
    """What the training steps read: (training sequences as indices, validation pairs
    (history indices, target index or -1), number of items), from a split log (`--log`) or
    else ML-1M (leave-one-out: s[:-2] trains, s[-2] validates)."""
    if log_path:
        lg = restore(log_path)
        return lg.train, lg.examples("valid"), len(lg.items)
    from . import data as data_mod
    ds = data_mod.load(data_dir)
    return [s[:-2] for s in ds.seqs], [(s[:-2], s[-2]) for s in ds.seqs], ds.n_items


def spread(pairs, n: int):
    """`n` examples spread evenly over `pairs` (all of them when n is 0 or too large): a
    fixed validation sample that covers the whole split, not only its first users."""
    if not n or n >= len(pairs):
        return pairs
    step = len(pairs) / n
    return [pairs[int(i * step)] for i in range(n)]


def main(argv=None):
    """`log --log TRAIN [--split files --valid V --test T] --out WORK/log.pkl`: read and
    split an interaction log, print its counts, save it for the later steps (`--log`)."""
    import argparse
    import json
    import sys
    ap = argparse.ArgumentParser(prog="promise_train log")
    ap.add_argument("--log", required=True, help="CSV, TSV or Parquet: user, item, timestamp per row")
    ap.add_argument("--split", default="loo", choices=["loo", "files"])
    ap.add_argument("--valid", default=None)
    ap.add_argument("--test", default=None)
    ap.add_argument("--user-col", default="user_id")
    ap.add_argument("--item-col", default="item_id")
    ap.add_argument("--time-col", default="timestamp")
    ap.add_argument("--sep", default=None, help="field separator (default: from the extension or header)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--pairs", default=None,
                    help="also write DIR/valid.pairs and DIR/test.pairs for `promise eval --pairs`")
    a = ap.parse_args(argv)
    check_destination(a.out)                 # before the log is read, not after
    if a.pairs:
        output_folder(a.pairs, "--pairs")
    try:
        lg = load(a.log, a.split, a.valid, a.test, a.user_col, a.item_col, a.time_col, a.sep)
    except LogError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    print(json.dumps(lg.summary()))
    save(lg, a.out)
    if a.pairs:
        for part in ("valid", "test"):
            write_pairs(lg, part, os.path.join(a.pairs, f"{part}.pairs"))
