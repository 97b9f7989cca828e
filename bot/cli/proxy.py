"""`crabbot proxy`: serve the OpenAI-compatible routing proxy (--host and --port override
[proxy])."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from rich.console import Console

from bot.cli.tooling import SeedBar, note_missing_categorizer
from router.config import RouterConfig, Secrets
from router.proxy.server import ProxyServer, serve
from router.router import ModelRouter


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

    def ready(server: ProxyServer, router: ModelRouter) -> None:
        note_missing_categorizer(router)
        print(
            f"crabbot proxy on {server.base_url} (routing mode {router.mode}, pool"
            f" {router.pool_size}, client keys {keys or 'none: open'}, database"
            f" {config.database.path}); Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )

    await serve(
        config,
        secrets,
        host=host,
        port=args.port,
        progress=SeedBar(Console(stderr=True)),
        on_ready=ready,
    )
    return 0


def _resolve(host: str) -> str:
    try:
        return socket.getaddrinfo(host, None)[0][4][0]
    except (socket.gaierror, IndexError):
        return "0.0.0.0"
