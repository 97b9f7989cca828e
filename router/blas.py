"""One BLAS thread for batch work made of many small matrix products (head refits, blocks of the
similarity matrix): a crowd of BLAS threads is several times slower there on a busy small box."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Limit BLAS to one thread inside the block."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield
