"""Telegram webhook mode: PTB's webhook server on 127.0.0.1 registers itself with the fake Bot
API (setWebhook with a secret token) and answers updates posted with that token, only those."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from bot.adapters.telegram import build_application, serving
from tests.bot_helpers import open_core
from tests.fakes.telegram_api import TOKEN, FakeTelegram

PRIVATE = 55


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_mode_checks_the_secret_token(seeded_db, embedder, upstream, telegram):
    port = free_port()
    settings = {
        "base_url": telegram.base_url,
        "base_file_url": telegram.base_file_url,
        "webhook_url": "https://family.example.org/hooks/",
        "webhook_port": port,
        "webhook_path": "crabbot",
    }
    core = await open_core(
        seeded_db, embedder, upstream.base_url, telegram=settings, upstream={"stream": False}
    )
    try:
        application = build_application(core, TOKEN, core.config.telegram)
        async with serving(application, core.config.telegram), aiohttp.ClientSession() as http:
            (registered,) = telegram.sent(method="setWebhook")
            assert registered["url"] == "https://family.example.org/hooks/crabbot"
            secret = registered["secret_token"]
            assert len(secret) >= 32  # a random one: none was configured
            url = f"http://127.0.0.1:{port}/crabbot"

            await telegram.push_message(PRIVATE, "not from Telegram")
            forged = telegram.take_update()
            headers = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
            async with http.post(url, json=forged, headers=headers) as response:
                assert response.status == 403

            await telegram.push_message(PRIVATE, "hello over the webhook")
            update = telegram.take_update()
            headers = {"X-Telegram-Bot-Api-Secret-Token": secret}
            async with http.post(url, json=update, headers=headers) as response:
                assert response.status == 200
            await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
    finally:
        await core.close()
    assert telegram.texts(PRIVATE)[0].endswith("Mom: hello over the webhook")
