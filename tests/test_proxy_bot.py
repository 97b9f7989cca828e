"""The switch, end to end on 127.0.0.1: the bot with upstream model "auto" -> the proxy over real
HTTP -> a fake provider that records the model of each request. The proxy routes; the bot loads
no embedding model and has no categorizer, and its stats read the proxy's log (one database)."""

from __future__ import annotations

from bot.chat_user import ChatUser
from bot.runtime import BotCore
from router import Secrets
from router.proxy.access import ClientKey
from tests.conftest import make_config
from tests.fakes.openai_provider import STREAM_PIECES
from tests.proxy_helpers import CHEAP, CLIENT_KEY, CODING, GREETING, STRONG, running_proxy

MOM = ChatUser("telegram", 42, "Mom")


async def test_bot_routes_through_the_proxy(seeded_db, embedder, provider):
    # A Groq key is present on purpose: the bot must still not build a categorizer.
    secrets = Secrets(groq_api_key="gsk-unused", openai_api_key=CLIENT_KEY, openai_base_url=None)
    async with running_proxy(seeded_db, embedder, provider.base_url) as proxy:
        # Only the three settings of the README's switch differ from a self-routing bot.
        config = make_config(
            seeded_db,
            upstream={"base_url": proxy.url, "model": "auto", "max_retries": 0},
            local={"enabled": False},
            categorizer={"enabled": False},
        )
        core = await BotCore.open(config, secrets)  # no embedder handed in: none may be built
        try:
            assert core.router.embedder is None and core.router.pool is None
            assert core.router.categorizer is None
            assert not core.router.routes_locally
            coding = await core.agent.handle("telegram:1", MOM, CODING)
            greeting = await core.agent.handle("telegram:2", MOM, GREETING)
            await proxy.gateway.settled()  # the proxy writes its rows a moment after answering
            stats = await core.admin.stats_text()
        finally:
            await core.close()
        rows = await proxy.settled_rows("prompt_tokens IS NOT NULL", 2)

    assert provider.models == [STRONG, CHEAP]
    assert all(seen.authorization != f"Bearer {CLIENT_KEY}" for seen in provider.requests)
    # The bot streams by default: the proxy relays the provider's chunks, usage included.
    assert all(seen.stream for seen in provider.requests)
    streamed = "".join(STREAM_PIECES)
    assert (coding.text, coding.model, coding.decision) == (streamed, "auto", None)
    assert (greeting.text, greeting.model) == (streamed, "auto")
    # The decisions were made, and logged once each, by the proxy.
    assert [row["tier"] for row in rows] == ["strong", "cheap"]
    assert [row["model"] for row in rows] == [STRONG, CHEAP]
    # The bot names its conversation, so the proxy's context prior sees follow-ups: in the
    # namespace of the bot's key (this one has no label: a fingerprint of it).
    namespace = ClientKey(CLIENT_KEY.encode(), None).namespace
    assert [row["conv_key"] for row in rows] == [
        f"proxy:{namespace}:telegram:1",
        f"proxy:{namespace}:telegram:2",
    ]
    assert "2 decisions" in stats
    assert "routing happens upstream" in stats
