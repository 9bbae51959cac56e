"""A user's program, type-checked by mypy --strict against the wheel's stubs (run.sh):
the binding's calls as the README shows them."""
import promise_rt


def feed(path: str, history: list[int], ids: list[str]) -> tuple[list[int], list[str], int]:
    model = promise_rt.Model.open(path, device="cpu")
    session = model.session(beams=8, candidates=32, results=10)
    session.warmup()
    items = [item for item, _score in session.recommend(history)]
    by_id, unknown = session.recommend_ids(ids)
    names = [name for name, _score in by_id]
    try:
        session.recommend([])
    except promise_rt.PromiseError as e:
        assert e.name == "empty-history" and e.code == 7
    return items, names, unknown
