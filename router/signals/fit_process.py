"""A background refit of the pool (classifier and search index) in a child process at idle CPU
priority, so its seconds of work never take a core or the GIL from routing: the rows go in on
stdin, the fitted state comes back on stdout as the bytes the store keeps."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

from router.signals.calibration import Calibration
from router.signals.fitted import FittedPool, fit_pool

CHUNK_ROWS = 4096  # vectors written to the child a slice at a time
# One thread each for BLAS and OpenMP in the child: it works beside the embedder, not on it.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class FitProcessError(RuntimeError):
    """The child could not fit (it failed, or could not be started)."""


def lower_priority(pid: int = 0) -> None:
    """Run process `pid` (0: this one) only when a core would otherwise idle (SCHED_IDLE), else
    at the lowest nice."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, pid, 19)


async def fit_in_process(
    vectors: np.ndarray,
    texts: Sequence[str],
    labels: Sequence[str],
    categories: tuple[str, ...],
    calibration: Calibration | None = None,
) -> tuple[FittedPool, bytes]:
    """What fit_pool makes of these rows, fitted in a child process, and its stored form."""
    header: dict[str, object] = {
        "categories": list(categories),
        "calibration": None if calibration is None else calibration_values(calibration),
        "texts": list(texts),
        "labels": list(labels),
        "shape": list(vectors.shape),
    }
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **CHILD_ENV},
        )
    except OSError as error:
        raise FitProcessError(f"could not start the fitting process: {error}") from error
    # At idle priority from its first instant (it lowers itself too, once its imports are done):
    # importing the router package costs about 0.35 s of CPU, which routing must not wait for.
    lower_priority(child.pid)
    try:
        out, err = await _exchange(child, header, vectors)
    except BaseException:  # cancelled (a stop): the child goes too
        if child.returncode is None:
            child.kill()
            await child.wait()
        raise
    if child.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise FitProcessError(f"the fitting process failed ({child.returncode}): {last[0]}")
    try:  # decoding a large pool's state takes a while: off the event loop
        fitted = await asyncio.to_thread(FittedPool.from_bytes, categories, out)
    except (OSError, ValueError, KeyError) as error:
        raise FitProcessError(f"the fitting process answered garbage: {error}") from error
    return fitted, out


async def _exchange(
    child: asyncio.subprocess.Process, header: dict[str, object], vectors: np.ndarray
) -> tuple[bytes, bytes]:
    assert child.stdin is not None
    line = await asyncio.to_thread(json.dumps, header, ensure_ascii=False)
    try:
        child.stdin.write(line.encode() + b"\n")
        for start in range(0, len(vectors), CHUNK_ROWS):
            chunk = np.ascontiguousarray(vectors[start : start + CHUNK_ROWS], dtype=np.float32)
            child.stdin.write(chunk.tobytes())
            await child.stdin.drain()
        child.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child died: its exit status and stderr say why
    return await child.communicate()


def calibration_values(calibration: Calibration) -> list[float]:
    return [
        calibration.head_scale,
        calibration.ngram_scale,
        calibration.far_slope,
        calibration.far_pivot,
    ]


def main() -> None:
    lower_priority()
    stdin = sys.stdin.buffer
    header = json.loads(stdin.readline())
    rows, dim = header["shape"]
    data = stdin.read(rows * dim * 4)
    if len(data) != rows * dim * 4:
        raise SystemExit("the fitting process got fewer vector bytes than announced")
    raw = header["calibration"]
    fitted = fit_pool(
        np.frombuffer(data, dtype=np.float32).reshape(rows, dim),
        header["texts"],
        header["labels"],
        tuple(header["categories"]),
        None if raw is None else Calibration(*(float(value) for value in raw)),
    )
    sys.stdout.buffer.write(fitted.to_bytes())
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
