"""`crabbot proxy --workers N`: N worker processes serve one listening socket, each with its own
router. The parent starts them (spawned: a process that already runs threads is never forked),
says when all serve, passes a stop on and waits for their graceful stop, and replaces a worker
that dies. Not uvicorn's Multiprocess: its workers outlive a killed parent (each holds both ends
of its pipe), which test_workers_stop_by_themselves_when_their_parent_is_killed pins."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client.multiprocess import mark_process_dead

from router.proxy.metrics import SHARED_DIR_ENV
from router.proxy.worker import WorkerReady, WorkerSpec, run_worker

SPAWN = multiprocessing.get_context("spawn")
STOP_GRACE_S = 30.0  # a worker still running this long after it was told to stop is killed
RESTART_WINDOW_S = 60.0
MAX_RESTARTS = 5  # workers dying more often than this in the window stop the proxy
OPENMP_THREADS_ENV = "OMP_NUM_THREADS"


class WorkerFailed(Exception):
    """A worker could not start, or workers keep dying: the proxy stops."""


def cores() -> int:
    """The cores this process may run on (a container's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, available: int, asked: str | None = None) -> int:
    """Each worker's OpenMP (and torch intra-op) threads: workers x threads <= cores, since more
    threads than cores make OpenMP sleep and wake at every parallel region (+16 ms an
    embedding on 2 cores). A smaller OMP_NUM_THREADS already set (`asked`) is kept."""
    cap = max(1, available // workers)
    if asked is not None and asked.strip().isdigit() and int(asked) > 0:
        return min(int(asked), cap)
    return cap


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


@contextlib.contextmanager
def _child_start(environment: dict[str, str]) -> Iterator[None]:
    """While a worker is spawned: its environment, and SIGINT ignored, which the child inherits
    until its own handlers are in place (a Ctrl-C while it imports would otherwise end it with
    a traceback). SIGINT stays blocked here meanwhile, so the parent misses none."""
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class Worker:
    """One worker process, as the parent sees it."""

    process: BaseProcess
    conn: Connection  # the parent's end: the worker says it serves; its closing tells it we left
    ready: asyncio.Future[WorkerReady]
    exited: asyncio.Future[int]

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def signal(self, signum: int) -> None:
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)


@dataclass
class Supervisor:
    """Runs `count` workers on `sock` until a stop signal (SIGINT, SIGTERM) or a failure."""

    spec: WorkerSpec
    sock: socket.socket
    count: int
    say: Callable[[str], None]  # a line for the operator (stderr)
    threads: int = 1
    workers: dict[int, Worker] = field(default_factory=dict)  # by place: 0 .. count - 1
    stop_signal: int | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _serving: asyncio.Event = field(default_factory=asyncio.Event)  # every worker served once
    _starting: int = 0
    _restarts: deque[float] = field(default_factory=deque)
    _metrics_dir: str = ""

    async def run(self, on_ready: Callable[[list[WorkerReady]], None]) -> int:
        """130 after Ctrl-C, 143 after SIGTERM, 1 when a worker failed (to start, or to stop
        cleanly). `on_ready` gets the first worker of each place once all of them serve."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._signalled, signum)
        self._metrics_dir = tempfile.mkdtemp(prefix="crabbot-proxy-metrics-")
        self._starting = self.count
        slots = [asyncio.create_task(self._slot(number)) for number in range(self.count)]
        serving = asyncio.create_task(self._serving.wait())
        stopped = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({serving, stopped, *slots}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done() and not stopped.done() and not any(slot.done() for slot in slots):
                on_ready([self.workers[n].ready.result() for n in range(self.count)])
                await asyncio.wait({stopped, *slots}, return_when=asyncio.FIRST_COMPLETED)
            failures = [slot.exception() for slot in slots if slot.done()]
        finally:
            self._stopping.set()
            unclean = await self._stop_all()
            for task in (*slots, serving):
                task.cancel()
            await asyncio.gather(*slots, serving, stopped, return_exceptions=True)
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        for failure in failures:
            if failure is not None:
                self.say(f"crabbot proxy: {failure}")
                return 1
        if unclean or self.stop_signal is None:
            return 1
        return 128 + self.stop_signal  # the shell's convention: 130 for Ctrl-C

    # -- one worker's place ------------------------------------------------------------------

    async def _slot(self, number: int) -> None:
        """Keep worker `number` running: start it, and start another when it dies, until the
        proxy stops. Raises WorkerFailed when a worker cannot start or they die too often."""
        replaced: int | None = None
        while True:
            worker = self.workers[number] = self._spawn()
            waits: set[asyncio.Future[Any]] = {worker.ready, worker.exited}
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if not worker.ready.done():
                if self._stopping.is_set():
                    return
                raise WorkerFailed(
                    f"worker {worker.pid} stopped before it was serving"
                    f" ({describe_exit(worker.exited.result())}); stopping"
                )
            if replaced is None:
                self._starting -= 1
                if not self._starting:
                    self._serving.set()
            else:
                self.say(f"crabbot proxy: worker {worker.pid} serves in place of {replaced}")
            code = await worker.exited
            if self._stopping.is_set():
                return
            self.say(
                f"crabbot proxy: worker {worker.pid} stopped ({describe_exit(code)});"
                " starting another"
            )
            self._count_restart()
            replaced = worker.pid

    def _count_restart(self) -> None:
        now = time.monotonic()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        if len(self._restarts) > MAX_RESTARTS:
            raise WorkerFailed(
                f"workers died {len(self._restarts)} times in {RESTART_WINDOW_S:.0f} s; stopping"
            )

    def _spawn(self) -> Worker:
        loop = asyncio.get_running_loop()
        mine, theirs = SPAWN.Pipe()
        process = SPAWN.Process(
            target=run_worker,
            args=(self.spec, self.sock, theirs),
            name="crabbot-proxy-worker",
            daemon=True,  # should the parent itself fail, its exit still stops its workers
        )
        environment = {SHARED_DIR_ENV: self._metrics_dir, OPENMP_THREADS_ENV: str(self.threads)}
        with _child_start(environment):
            process.start()
        theirs.close()
        worker = Worker(process, mine, loop.create_future(), loop.create_future())

        def readable() -> None:
            try:
                while mine.poll():
                    message = mine.recv()
                    if isinstance(message, WorkerReady) and not worker.ready.done():
                        worker.ready.set_result(message)
            except (EOFError, OSError):  # it exited: the sentinel says how
                loop.remove_reader(mine.fileno())

        def ended() -> None:
            loop.remove_reader(process.sentinel)
            if not mine.closed:
                readable()  # a message sent just before the exit is still read
                loop.remove_reader(mine.fileno())
                mine.close()
            process.join()  # reaped: a zombie would count as running to the routing log
            mark_process_dead(worker.pid, self._metrics_dir)
            assert process.exitcode is not None
            worker.exited.set_result(process.exitcode)

        loop.add_reader(mine.fileno(), readable)
        loop.add_reader(process.sentinel, ended)
        return worker

    # -- stopping ----------------------------------------------------------------------------

    def _signalled(self, signum: int) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            # The parent's copy of the listening socket closes now: once each worker has closed
            # its own (the first thing a stopping worker does), new connections are refused at
            # once rather than queued for nobody and reset at the exit.
            self.sock.close()
            self._stopping.set()  # _stop_all tells the workers
        elif signum == signal.SIGINT:  # a second Ctrl-C: the workers stop without waiting
            for worker in self.workers.values():  # for their open connections
                worker.signal(signal.SIGINT)

    async def _stop_all(self) -> bool:
        """Tell every running worker to stop and wait for it; True when one did not stop
        cleanly (a worker that had died already was reported when it did)."""
        running = [worker for worker in self.workers.values() if not worker.exited.done()]
        for worker in running:
            worker.signal(signal.SIGTERM)
        exits = [worker.exited for worker in running]
        _, late = await asyncio.wait(exits, timeout=STOP_GRACE_S) if exits else (set(), set())
        unclean = False
        for worker in running:
            if worker.exited in late:
                self.say(f"crabbot proxy: worker {worker.pid} did not stop in time: killed")
                worker.signal(signal.SIGKILL)
                await worker.exited
                unclean = True
            elif worker.ready.done() and worker.exited.result() != 0:
                code = describe_exit(worker.exited.result())
                self.say(f"crabbot proxy: worker {worker.pid} did not stop cleanly ({code})")
                unclean = True
        return unclean
