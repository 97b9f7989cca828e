"""One worker process of `crabbot proxy --workers N`: its own router, provider client and
embedding thread, serving the socket its parent bound; it stops gracefully on SIGINT or SIGTERM,
or when its parent is gone."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection

from router.config import ConfigError, RouterConfig, Secrets
from router.proxy.event_loop import proxy_loop_factory
from router.proxy.metrics import leave_shared_dir, shared_dir
from router.proxy.server import ProxyServer, serve, stop_on_signals
from router.router import ModelRouter

LOG_FORMAT = "%(asctime)s %(levelname)s worker %(process)d %(name)s: %(message)s"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs from its parent (pickled to it): the config as the command line
    left it, where it listens, and how much to log."""

    config: RouterConfig
    host: str
    verbose: bool = False


@dataclass(frozen=True)
class WorkerReady:
    """A worker's one message to its parent: it is serving."""

    pid: int
    mode: str
    pool_size: int


def run_worker(spec: WorkerSpec, sock: socket.socket, parent: Connection) -> None:
    """The worker process's entry point; exits 0 after a graceful stop."""
    logging.basicConfig(
        level=logging.DEBUG if spec.verbose else logging.WARNING,
        format=LOG_FORMAT,
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with asyncio.Runner(loop_factory=proxy_loop_factory()) as runner:
            runner.run(_serve(spec, sock, parent))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        sys.exit(2)


async def _serve(spec: WorkerSpec, sock: socket.socket, parent: Connection) -> None:
    loop = asyncio.get_running_loop()
    with stop_on_signals() as stop:
        orphaned = False

        def parent_gone() -> None:
            # The parent never writes: readable means its end closed (it exited, or was killed).
            nonlocal orphaned
            orphaned = True
            loop.remove_reader(parent.fileno())
            logging.getLogger(__name__).warning("the proxy's parent process is gone: stopping")
            stop()

        loop.add_reader(parent.fileno(), parent_gone)

        def ready(started: ProxyServer, router: ModelRouter) -> None:
            stop.server = started
            try:
                parent.send(WorkerReady(os.getpid(), router.mode, router.pool_size))
            except OSError:  # the parent is gone
                stop()

        try:
            await serve(spec.config, Secrets(), host=spec.host, sock=sock, on_ready=ready)
        except asyncio.CancelledError:
            if not stop.asked:
                raise
        finally:
            folder = shared_dir()
            if orphaned and folder is not None:  # nobody else will remove it
                leave_shared_dir(folder)
