"""The Python binding against the shipped bundles: the same feed from a directory, a
.promise file and its bytes; the full-feed rules; errors as PromiseError with the stable
code; several threads with their own sessions."""
import os
import pathlib
import threading

import pytest

import promise_rt

REPO = pathlib.Path(__file__).resolve().parents[3]
ML1M = REPO / "models" / "ml1m"
ONE_FILE = REPO / "models" / "ml1m.promise"
HISTORY = [12, 7, 99, 1024, 5, 318]


@pytest.fixture(scope="module")
def model():
    return promise_rt.Model.open(str(ML1M))


def test_feed_is_full_unseen_and_sorted(model):
    assert model.num_items == 3706
    s = model.session(beams=8, candidates=32, results=10)
    s.warmup()
    feed = s.recommend(HISTORY)
    assert len(feed) == 10
    items = [i for i, _ in feed]
    assert len(set(items)) == 10
    assert not set(items) & set(HISTORY)
    scores = [sc for _, sc in feed]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= i < model.num_items for i in items)
    assert s.config == (8, 32, 10, True, pytest.approx(s.config[4]))


def test_directory_file_and_bytes_give_the_same_feed(model):
    want = model.session().recommend(HISTORY)
    by_path = promise_rt.Model.open(ONE_FILE).session().recommend(HISTORY)
    by_bytes = promise_rt.Model.open(ONE_FILE.read_bytes()).session().recommend(HISTORY)
    assert [i for i, _ in by_path] == [i for i, _ in want]
    assert [i for i, _ in by_bytes] == [i for i, _ in want]


def test_tables_read_in_place_give_the_same_feed(model):
    in_place = promise_rt.Model.open(str(ONE_FILE), tables_in_place=True)
    want = model.session(beams=8, candidates=32, results=10).recommend(HISTORY)
    assert in_place.session(beams=8, candidates=32, results=10).recommend(HISTORY) == want


def test_plain_beam_search(model):
    feed = model.session(beams=4, prm=False, results=4).recommend(HISTORY)
    assert len(feed) == 4


def test_errors_carry_the_stable_code(model):
    s = model.session()
    with pytest.raises(promise_rt.PromiseError) as e:
        s.recommend([])
    assert e.value.name == "empty-history" and e.value.code == 7
    with pytest.raises(promise_rt.PromiseError) as e:
        s.recommend([1, 1 << 30])
    assert e.value.name == "unknown-item" and str(1 << 30) in str(e.value)
    with pytest.raises(promise_rt.PromiseError) as e:
        model.session(beams=0)
    assert e.value.name == "config"
    with pytest.raises(promise_rt.PromiseError) as e:
        s.set_history_window(0)
    assert e.value.name == "config"
    with pytest.raises(promise_rt.PromiseError) as e:
        promise_rt.Model.open(REPO / "no-such-bundle")
    assert e.value.name == "io"
    with pytest.raises(promise_rt.PromiseError) as e:
        promise_rt.Model.open(b"not a bundle")
    assert e.value.code > 0
    with pytest.raises(OverflowError):
        s.recommend([-1])
    with pytest.raises(ValueError):
        promise_rt.Model.open(str(ML1M), device="tpu")
    with pytest.raises(TypeError):
        promise_rt.Model.open(42)


def test_threads_with_their_own_sessions_agree(model):
    want = [i for i, _ in model.session().recommend(HISTORY)]
    got, errors = [], []

    def run():
        try:
            s = model.session()
            for _ in range(20):
                got.append([i for i, _ in s.recommend(HISTORY)])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(got) == 80 and all(g == want for g in got)


def test_version():
    assert promise_rt.version().count(".") == 2


TINY = REPO / "models" / "tiny"


def bundle_with_ids(tmp_path, ids):
    """A copy of the tiny bundle carrying the app's ids (ids.bin, models/README.md)."""
    import hashlib
    import json
    import shutil
    import struct

    d = tmp_path / "tiny-ids"
    shutil.copytree(TINY, d)
    blobs = [s.encode("utf-8") for s in ids]
    offsets, at = [], 0
    for b in [b""] + blobs:
        at += len(b)
        offsets.append(at)
    data = (b"PRMIDS\0\0" + struct.pack("<IIQ", 1, len(blobs), offsets[-1])
            + struct.pack(f"<{len(offsets)}I", *offsets) + b"".join(blobs))
    (d / "ids.bin").write_bytes(data)
    man = json.loads((d / "manifest.json").read_text())
    man["ids"] = "ids.bin"
    man["files"].append({"name": "ids.bin", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (d / "manifest.json").write_text(json.dumps(man))
    return d


def test_histories_from_any_iterable_bounded_as_they_arrive(model):
    s = model.session()
    want = s.recommend(HISTORY)
    assert s.recommend(tuple(HISTORY)) == want
    assert s.recommend(iter(HISTORY)) == want
    assert s.recommend(x for x in HISTORY) == want
    import array
    assert s.recommend(array.array("I", HISTORY)) == want
    # a range of 2^32 items stops at the limit, without building the whole history
    with pytest.raises(promise_rt.PromiseError) as e:
        s.recommend(range(2**32))
    assert e.value.name == "invalid-argument" and "at most 65536" in str(e.value)

    class Liar:   # claims 2^40 items: the length is never trusted
        def __len__(self):
            return 1 << 40

        def __getitem__(self, i):
            if i >= 3:
                raise IndexError
            return HISTORY[i]
    assert s.recommend(Liar()) == s.recommend(HISTORY[:3])
    with pytest.raises(TypeError):
        s.recommend(5)
    with pytest.raises(TypeError):
        s.recommend(["a"])


def test_recommend_ids_speaks_the_apps_ids(tmp_path):
    tiny = promise_rt.Model.open(str(TINY))
    n = tiny.num_items
    ids = [f"sku-{i:05d}" for i in range(n)]
    ids[1] = "a,b"          # any legal id
    m = promise_rt.Model.open(str(bundle_with_ids(tmp_path, ids)))
    s = m.session(beams=2, candidates=4, results=3)
    by_index = s.recommend([3, 1, 4])
    feed, unknown = s.recommend_ids([ids[3], "new-item", ids[1], ids[4]])
    assert unknown == 1
    assert [i for i, _ in feed] == [ids[i] for i, _ in by_index]
    assert [sc for _, sc in feed] == pytest.approx([sc for _, sc in by_index])
    assert s.recommend_ids(["nobody"]) == ([], 1)
    for bad, why in (([""], "is empty"), (["a\x07b"], "control"), (["x" * 10_000_000], "more bytes")):
        with pytest.raises(promise_rt.PromiseError) as e:
            s.recommend_ids(bad)
        assert e.value.name == "invalid-argument" and why in str(e.value)
        assert len(str(e.value)) < 400
    with pytest.raises(promise_rt.PromiseError) as e:
        s.recommend_ids([ids[0], "a\ud800"])
    assert e.value.name == "invalid-argument" and "history id 1" in str(e.value)
    with pytest.raises(TypeError):
        s.recommend_ids([ids[0], 3])
    with pytest.raises(promise_rt.PromiseError) as e:
        s.recommend_ids(f"x{i}" for i in range(2**32))
    assert e.value.name == "invalid-argument"
    with pytest.raises(promise_rt.PromiseError) as e:
        tiny.session().recommend_ids(["sku-00001"])
    assert e.value.name == "config"
