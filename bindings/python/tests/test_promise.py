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
