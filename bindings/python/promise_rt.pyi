"""Type stubs of the promise-rt Python binding (the extension module `promise_rt`)."""
import os
from typing import Iterable, Literal, Optional, Union

__all__ = ["Model", "Session", "PromiseError", "version"]

class PromiseError(Exception):
    """A runtime error: `code` is the stable status (the C API's PROMISE_STATUS_*), `name` its short name."""
    code: int
    name: str

class Model:
    """A loaded model: immutable, shared by any number of threads and sessions."""
    @staticmethod
    def open(
        source: Union[str, "os.PathLike[str]", bytes],
        device: Literal["cpu", "gpu", "auto"] = "cpu",
        *,
        tables_in_place: bool = False,
    ) -> "Model":
        """Open a bundle directory or a one-file `.promise` (a path, or its bytes) and load it;
        `tables_in_place` reads the catalog-sized tables from the memory map (the file must
        then stay unchanged while the model lives)."""
    @property
    def num_items(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def backend(self) -> str: ...
    def session(
        self,
        beams: int = 16,
        candidates: Optional[int] = None,
        results: int = 10,
        prm: bool = True,
        mix: Optional[float] = None,
    ) -> "Session":
        """A session with every buffer allocated (K' beams, K+ candidates, N results)."""

class Session:
    """Per-thread request state; requests reuse its buffers."""
    def recommend(self, history: Iterable[int]) -> list[tuple[int, float]]:
        """The feed for item indices (oldest first): (item, score), best first."""
    def recommend_ids(self, history: Iterable[str]) -> tuple[list[tuple[str, float]], int]:
        """The feed for the app's ids (oldest first): ((id, score) best first, unknown ids skipped)."""
    def warmup(self) -> None: ...
    def set_history_window(self, items: int) -> None: ...
    @property
    def config(self) -> tuple[int, int, int, bool, float]:
        """K', K+, N, prm, mix."""

def version() -> str: ...
