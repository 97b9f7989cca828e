"""`crabbot run telegram` as an operator runs it (issue 24, 7 and 13): SIGTERM and SIGHUP write
every routing-log row and memory exchange before the exit; a wrong token or no network at
start is one line with the fix and status 2. The real python-telegram-bot polls the fake Bot
API; the real openai SDK asks the fake upstream."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.db_helpers import fetch_sync
from tests.fakes.telegram_api import TOKEN, FakeTelegram

ROOT = Path(__file__).resolve().parent.parent
FAMILY_CHAT = 555


def config_file(folder: Path, telegram_url: str, file_url: str, upstream_url: str) -> Path:
    path = folder / "crabbot.toml"
    path.write_text(
        f'[database]\npath = "crabbot.db"\n'
        f'[telegram]\nbase_url = "{telegram_url}"\nbase_file_url = "{file_url}"\n'
        f"edit_interval_s = 0.0\n"
        f'[upstream]\nbase_url = "{upstream_url}"\nstream = false\nmax_retries = 0\n'
        f"[access]\ntelegram_users = [42]\n"
    )
    return path


def env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}
    return keep | {"OPENAI_API_KEY": "sk-test"} | extra


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
async def test_a_stop_signal_writes_every_row(tmp_path, seeded_db, upstream, telegram, stop):
    config = config_file(tmp_path, telegram.base_url, telegram.base_file_url, upstream.base_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "telegram", "--config", str(config),
        cwd=ROOT, env=env(TELEGRAM_BOT_TOKEN=TOKEN),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        texts = ["good morning!", "what is 12 times 7?", "おやすみ"]
        for n, text in enumerate(texts, start=1):
            await telegram.push_message(FAMILY_CHAT, text, chat_type="private")
            await telegram.wait_until(lambda n=n: len(telegram.texts(FAMILY_CHAT)) == n)
        process.send_signal(stop)
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    db = tmp_path / "crabbot.db"
    rows = fetch_sync(db, "SELECT prompt, outcome FROM routing_log ORDER BY id")
    memory = fetch_sync(db, "SELECT COUNT(*) FROM messages")[0][0]
    assert rows == [(text, "completed") for text in texts]
    assert memory == 2 * len(texts)


async def start_failure(tmp_path: Path, telegram_url: str) -> tuple[int, str]:
    config = config_file(tmp_path, telegram_url, telegram_url, "http://127.0.0.1:9/v1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "run", "telegram", "--config", str(config),
        cwd=ROOT, env=env(TELEGRAM_BOT_TOKEN="999:wrong"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 120)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    return process.returncode or 0, lines[-1] if lines else ""


async def test_a_wrong_token_or_no_network_is_one_line_with_status_2(
    tmp_path, telegram, refused_port
):
    code, last = await start_failure(tmp_path, telegram.base_url)  # the fake refuses 999:wrong
    assert code == 2 and "TELEGRAM_BOT_TOKEN" in last and "Traceback" not in last
    code, last = await start_failure(tmp_path, f"http://127.0.0.1:{refused_port}/bot")
    assert code == 2 and "reach" in last and "network" in last


async def test_the_bot_warns_at_start_when_its_upstream_wants_a_key_it_lacks(tmp_path):
    """Issue 24, 13: a keyed proxy and no OPENAI_API_KEY is said at start, not only by an
    apology on every message; a keyless local server and a key that is set say nothing."""
    from aiohttp import web

    from bot.cli.start_checks import upstream_warning
    from bot.config import UpstreamSettings
    from bot.upstream import Upstream
    from router import Secrets

    async def models(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") == "Bearer sk-family":
            return web.json_response({"object": "list", "data": []})
        error = {"error": {"message": "missing or wrong key", "type": "invalid_request_error"}}
        return web.json_response(error, status=401)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    settings = UpstreamSettings(base_url=f"http://127.0.0.1:{port}/v1", model="auto")
    try:
        for key, warned in ((None, True), ("sk-family", False)):
            secrets = Secrets(openai_api_key=key, openai_base_url=None)
            upstream = Upstream(settings, secrets)
            try:
                warning = await upstream_warning(upstream)
            finally:
                await upstream.close()
            assert bool(warning) is warned
            if warned:
                assert warning is not None and "OPENAI_API_KEY" in warning and "401" in warning
    finally:
        await runner.cleanup()
