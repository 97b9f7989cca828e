"""Helpers for the proxy's tests: a real uvicorn proxy on a free 127.0.0.1 port, in front of a
fake provider, with the routing log at hand."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from bot.config import CrabbotConfig
from router import ModelRouter, Secrets, open_router
from router.embedding.embedder import Embedder
from router.proxy.app import create_app
from router.proxy.gateway import Gateway
from router.proxy.provider import Provider
from router.proxy.server import ProxyServer
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parent.parent
START_LIMIT_S = 120.0  # generous for a loaded CI machine
CLIENT_KEY = "client-key-for-tests"
PROVIDER_KEY = "provider-key-never-leaves"
CODING = "Write a Python function that removes duplicates from a list but keeps the order"
GREETING = "Good morning everyone! Hope you all slept well"


def user(text: str) -> list[dict[str, str]]:
    """A chat request's messages: one user message."""
    return [{"role": "user", "content": text}]


STRONG, CHEAP = "gpt-4.1", "gpt-4.1-nano"


@dataclass
class RunningProxy:
    url: str
    router: ModelRouter
    config: CrabbotConfig
    gateway: Gateway

    def client(self, key: str = CLIENT_KEY, **kwargs: Any) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.url, api_key=key, max_retries=0, **kwargs)

    async def rows(self, where: str = "TRUE") -> list[dict[str, Any]]:
        await self.router.log.flush()
        rows = await self.router.conn.fetch_all(
            f"SELECT * FROM routing_log WHERE {where} ORDER BY id"
        )
        return [dict(row) for row in rows]

    async def settled_rows(self, where: str, count: int) -> list[dict[str, Any]]:
        """The `count` log rows matching `where`, read once the proxy has written the usage of
        every request answered so far (usage is written beside the response, so a client can
        have its answer first). Any other number of rows fails the test."""
        await self.gateway.settled()
        rows = await self.rows(where)
        assert len(rows) == count, (
            f"expected {count} routing_log rows where {where} once the proxy's writes settled,"
            f" found {len(rows)}"
        )
        return rows


@asynccontextmanager
async def running_proxy(
    db: Path,
    embedder: Embedder | None,
    provider_url: str,
    env_keys: tuple[str, ...] = (),
    *,
    sections: dict[str, dict[str, Any]] | None = None,
    groq_api_key: str | None = None,
    admin_key: str | None = None,
    **proxy: Any,
) -> AsyncIterator[RunningProxy]:
    """The proxy on a free port; without an embedder its router has no local signal (quick to
    open, for requests that are refused or not routed). `sections` replace config sections
    (the categorizer is off unless they say otherwise); `admin_key` opens /admin."""
    settings = {"base_url": provider_url, "client_keys": [CLIENT_KEY]} | proxy
    config = make_config(
        db,
        **{
            "categorizer": {"enabled": False},
            "local": {"enabled": embedder is not None},
            "proxy": settings,
        }
        | (sections or {}),
    )
    secrets = Secrets(groq_api_key=groq_api_key)
    router = await open_router(config, secrets, embedder=embedder)
    provider = Provider.from_settings(config.proxy, Secrets(), api_key=PROVIDER_KEY)
    app = create_app(router, provider, env_keys, admin_key)
    server = await ProxyServer(app, "127.0.0.1", 0).start()
    try:
        yield RunningProxy(server.base_url, router, config, app.state.gateway)
    finally:
        await server.stop()
        await app.state.gateway.settled()
        await provider.close()
        await router.close()


async def start_proxy_process(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, str]:
    """`crabbot proxy --config CONFIG ARGS...` in a process of its own, with the provider key
    (and `env`) in its environment, once it serves: the process (its stderr still to read) and
    its 'crabbot proxy on' line."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "CRABBOT_PROXY_KEYS")
    }
    environment["OPENAI_API_KEY"] = "provider-key-for-tests"
    environment |= env or {}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bot.cli", "proxy", "--config", str(config), *args),
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    while line := (await asyncio.wait_for(process.stderr.readline(), START_LIMIT_S)).decode():
        if line.startswith("crabbot proxy on "):
            return process, line
    raise AssertionError(f"the proxy stopped before it was ready (exit {await process.wait()})")


@asynccontextmanager
async def proxy_process(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`start_proxy_process`, and the process killed on the way out if it still runs (a test
    that failed before it stopped the proxy)."""
    process, line = await start_proxy_process(config, *args, env=env)
    try:
        yield process, line
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
