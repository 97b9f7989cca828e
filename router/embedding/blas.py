"""One BLAS thread: for batch work made of many small matrix products (head refits, blocks of the
similarity matrix), where a crowd of BLAS threads is several times slower on a busy small box;
and for a whole routing process, where OpenBLAS's spinning workers would take the cores from the
embedder's OpenMP team (a routed message then cost three embeddings)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread inside the block."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def one_blas_thread_for_the_process() -> None:
    """From now on, BLAS runs on the thread that calls it (searches and the head: < 1 ms)."""
    threadpool_limits(limits=1, user_api="blas")
