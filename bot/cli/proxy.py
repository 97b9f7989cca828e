"""`crabbot proxy`: serve the OpenAI-compatible routing proxy (--host and --port override
[proxy]; --workers N runs N processes on one socket)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import socket
import sys

from rich.console import Console

from bot.cli.tooling import SeedBar, note_missing_categorizer
from router.builder import open_router
from router.config import RouterConfig, Secrets
from router.proxy.server import (
    ProxyServer,
    base_url,
    bind_socket,
    check_settings,
    serve,
    stop_on_signals,
)
from router.proxy.supervisor import OPENMP_THREADS_ENV, Supervisor, cores, threads_per_worker
from router.proxy.worker import WorkerReady, WorkerSpec
from router.router import ModelRouter
from router.store.database import describe


async def run_proxy(args: argparse.Namespace, config: RouterConfig) -> int:
    """The `crabbot proxy` subcommand: --host and --port override the [proxy] section."""
    settings = config.proxy
    host = args.host or settings.host
    secrets = Secrets()
    keys = len(settings.client_keys) + len(secrets.proxy_client_keys())
    if not keys and not ipaddress.ip_address(_resolve(host)).is_loopback:
        print(
            f"warning: listening on {host} with no client keys (CRABBOT_PROXY_KEYS or"
            " proxy.client_keys): anyone who can reach it"
            " can spend the provider key",
            file=sys.stderr,
        )

    if args.workers > 1:
        return await _run_workers(args, config, secrets, host, keys)

    with stop_on_signals() as stop:

        def ready(server: ProxyServer, router: ModelRouter) -> None:
            stop.server = server
            note_missing_categorizer(router)
            print(
                f"crabbot proxy on {server.base_url} (routing mode {router.mode}, pool"
                f" {router.pool_size}, client keys {keys or 'none: open'}, database"
                f" {describe(config.database)}); Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )

        try:
            await serve(
                config,
                secrets,
                host=host,
                port=args.port,
                progress=SeedBar(Console(stderr=True)),
                on_ready=ready,
            )
        except asyncio.CancelledError:
            if not stop.asked:
                raise
    # The shell's convention: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM).
    return 128 + stop.signals[0] if stop.signals else 0


async def _run_workers(
    args: argparse.Namespace, config: RouterConfig, secrets: Secrets, host: str, keys: int
) -> int:
    """The parent of --workers N: it readies the database once (migrations, a fresh pool's
    seeding, the fitted head), so the workers only read it; binds the socket; then supervises."""
    provider = check_settings(config, secrets)
    await provider.close()
    router = await open_router(config, secrets, progress=SeedBar(Console(stderr=True)))
    note_missing_categorizer(router)
    await router.close()
    if router.embedder is not None:
        router.embedder.close()  # the workers embed; the parent is done with its model
    available = cores()
    if args.workers > available:
        print(
            f"warning: {args.workers} workers on {available} cores: routing gets no faster past"
            " one worker a core",
            file=sys.stderr,
        )
    threads = threads_per_worker(args.workers, available, os.environ.get(OPENMP_THREADS_ENV))
    sock = bind_socket(host, config.proxy.port if args.port is None else args.port)
    port = sock.getsockname()[1]

    def ready(workers: list[WorkerReady]) -> None:
        first = workers[0]
        print(
            f"crabbot proxy on {base_url(host, port)} (routing mode {first.mode}, pool"
            f" {first.pool_size}, client keys {keys or 'none: open'}, database"
            f" {describe(config.database)}, {len(workers)} workers: pids"
            f" {' '.join(str(worker.pid) for worker in workers)}); Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    spec = WorkerSpec(config, host, args.verbose)
    try:
        return await Supervisor(spec, sock, args.workers, say, threads).run(ready)
    finally:
        sock.close()


def _resolve(host: str) -> str:
    try:
        return str(socket.getaddrinfo(host, None)[0][4][0])
    except (socket.gaierror, IndexError):
        return "0.0.0.0"
