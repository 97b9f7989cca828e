"""The switch, end to end on 127.0.0.1: the bot with upstream model "auto" -> the proxy over real
HTTP -> a fake provider that records each request. The proxy routes; the bot loads no embedding
model, has no categorizer and its own database (as on another host): its /routing stats, /routing
mode and /reset reach the proxy through its admin endpoints, and one conversation routes the same
through the proxy as in a bot that routes itself."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
from openai import AsyncOpenAI

from bot.adapters.console import run_console
from bot.adapters.telegram import build_application, polling
from bot.admin import REFUSAL, Text, parse_command
from bot.chat_user import ChatUser
from bot.proxy_admin import ProxyAdmin
from bot.runtime import BotCore
from router import Secrets
from router.proxy.access import ClientKey
from tests.bot_helpers import open_core
from tests.conftest import make_config
from tests.fakes.openai_api import answer_from
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.pg_backend import copy_seeded
from tests.proxy_helpers import (
    CHEAP,
    CLIENT_KEY,
    CODING,
    GREETING,
    STRONG,
    proxy_process,
    running_proxy,
)
from tests.test_bot_console import capture, scripted

MOM = ChatUser("telegram", 42, "Mom")
GRANNY = ChatUser("telegram", 43, "奶奶")
ROOT = ChatUser("console", "root", "root")
ADMIN_KEY = "admin-key-for-tests-0123456789"
FOLLOW_UP = "make it faster"  # after CODING, the proxy's context prior decides it


def bot_secrets(admin_key: str | None = ADMIN_KEY) -> Secrets:
    # A Groq key is present on purpose: the bot must still not build a categorizer.
    return Secrets(
        groq_api_key="gsk-unused",
        openai_api_key=CLIENT_KEY,
        openai_base_url=None,
        crabbot_proxy_admin_key=admin_key,
    )


async def open_auto_bot(db: Path, url: str, admin_key: str | None = ADMIN_KEY) -> BotCore:
    """A bot whose upstream is the proxy at `url` (only the README's switch differs from a
    self-routing bot), on a database of its own."""
    config = make_config(
        db,
        upstream={"base_url": url, "model": "auto", "max_retries": 0, "timeout_s": 10.0},
        local={"enabled": False},
        categorizer={"enabled": False},
        admins={"telegram": [MOM.id]},
    )
    return await BotCore.open(config, bot_secrets(admin_key))


async def command(core: BotCore, user: ChatUser, conv_key: str, text: str) -> str:
    command = parse_command(text)
    assert command is not None
    answer = await core.admin.answer(user, conv_key, command)
    assert isinstance(answer, Text)
    return answer.text


async def test_bot_routes_through_the_proxy_and_shows_its_stats(
    tmp_path, seeded_db, embedder, provider
):
    async with running_proxy(seeded_db, embedder, provider.base_url, admin_key=ADMIN_KEY) as proxy:
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url)  # no embedder: none built
        try:
            assert core.router.embedder is None and core.router.pool is None
            assert core.router.categorizer is None
            assert not core.router.routes_locally
            coding = await core.agent.handle("telegram:1", MOM, CODING)
            greeting = await core.agent.handle("telegram:2", MOM, GREETING)
            await proxy.gateway.settled()  # the proxy writes its rows a moment after answering
            stats = await command(core, MOM, "telegram:1", "/routing stats")
            chart = await command(core, MOM, "telegram:1", "/routing stats chart")
        finally:
            await core.close()
        rows = await proxy.settled_rows("prompt_tokens IS NOT NULL", 2)

    assert provider.models == [STRONG, CHEAP]
    assert all(seen.authorization != f"Bearer {CLIENT_KEY}" for seen in provider.requests)
    # The bot streams by default: the proxy relays the provider's chunks, usage included.
    assert all(seen.stream for seen in provider.requests)
    assert (coding.text, coding.model, coding.decision) == (answer_from(STRONG), "auto", None)
    assert (greeting.text, greeting.model) == (answer_from(CHEAP), "auto")
    # What the proxy chose, from its headers.
    assert coding.routed is not None and greeting.routed is not None
    assert (coding.routed.tier, coding.routed.category, coding.routed.model) == (
        "strong",
        "coding",
        STRONG,
    )
    assert (greeting.routed.tier, greeting.routed.source) == ("cheap", "knn")
    # The decisions were made, and logged once each, by the proxy.
    assert [row["tier"] for row in rows] == ["strong", "cheap"]
    # The bot names its conversation, so the proxy's context prior sees follow-ups: in the
    # namespace of the bot's key (this one has no label: a fingerprint of it).
    namespace = ClientKey(CLIENT_KEY.encode(), None).namespace
    assert [row["conv_key"] for row in rows] == [
        f"proxy:{namespace}:telegram:1",
        f"proxy:{namespace}:telegram:2",
    ]
    # The bot's own database holds no decision; its stats are the proxy's.
    assert f"crabbot routing at the proxy {proxy.url} (model auto)" in stats
    assert "— all time: 2 decisions" in stats
    assert "tier: cheap 1 (50%) · strong 1 (50%)" in stats
    assert "crabbot stats" in chart


async def test_routing_mode_from_the_bot_changes_the_proxys_and_only_for_admins(
    tmp_path, seeded_db, embedder, provider
):
    async with running_proxy(seeded_db, embedder, provider.base_url, admin_key=ADMIN_KEY) as proxy:
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url)
        try:
            refused = await command(core, GRANNY, "telegram:1", "/routing mode off")
            mode_after_refusal = proxy.router.mode
            changed = await command(core, MOM, "telegram:1", "/routing mode off")
            async with httpx.AsyncClient() as http:
                health = await http.get(
                    proxy.url.removesuffix("/v1") + "/healthz",
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                )
            coding = await core.agent.handle("telegram:1", MOM, CODING)
            again = await command(core, MOM, "telegram:1", "/routing mode off")
        finally:
            await core.close()
    assert refused == REFUSAL and mode_after_refusal == "live"
    assert changed == "routing mode at the proxy: live → off"
    assert again == "routing mode at the proxy: off → off (unchanged)"
    assert health.json()["mode"] == "off"
    assert coding.routed is not None and coding.routed.source == "fixed"
    # The bot's own stored mode is not what routes: it was left alone.
    assert core.router.mode == "live"


async def test_the_bot_says_in_one_line_why_the_proxys_mode_did_not_change(
    tmp_path, seeded_db, provider
):
    async def attempt(url: str, admin_key: str | None) -> tuple[str, str, int]:
        core = await open_auto_bot(tmp_path / "bot.db", url, admin_key)
        try:
            mode = await command(core, MOM, "telegram:1", "/routing mode shadow")
            stats = await command(core, MOM, "telegram:1", "/routing stats")
        finally:
            await core.close()
        return mode, stats, core.counters["proxy_admin_errors"]

    async with running_proxy(seeded_db, None, provider.base_url, admin_key=ADMIN_KEY) as proxy:
        no_key = await attempt(proxy.url, None)
        wrong_key = await attempt(proxy.url, "not-the-admin-key")
        assert proxy.router.mode == "live"
    url = proxy.url  # stopped now: nothing listens there
    unreachable = await attempt(url, ADMIN_KEY)
    async with running_proxy(tmp_path / "p2.db", None, provider.base_url) as keyless:
        proxy_without_key = await attempt(keyless.url, ADMIN_KEY)
        assert keyless.router.mode == "live"

    reasons = {
        "no_key": "no admin key: set CRABBOT_PROXY_ADMIN_KEY in the bot's environment",
        "wrong_key": "the proxy refused the admin key",
        "unreachable": f"the proxy at {url} is unreachable",
        "proxy_without_key": "the proxy has no admin key: set CRABBOT_PROXY_ADMIN_KEY",
    }
    results = {
        "no_key": no_key,
        "wrong_key": wrong_key,
        "unreachable": unreachable,
        "proxy_without_key": proxy_without_key,
    }
    for name, (mode, stats, errors) in results.items():
        assert mode.startswith(f"routing mode not changed: {reasons[name]}"), name
        assert "\n" not in mode
        assert f"the proxy's stats could not be read: {reasons[name]}" in stats, name
        assert "decisions" not in stats  # nothing from the bot's own, empty, log
        assert errors == 2, name  # logged and counted, by the bot
        assert ADMIN_KEY not in mode + stats


async def test_reset_in_the_bot_clears_the_proxys_context_for_that_conversation(
    tmp_path, seeded_db, embedder, provider
):
    async with running_proxy(seeded_db, embedder, provider.base_url, admin_key=ADMIN_KEY) as proxy:
        # /reset is anyone's: it needs the bot's client key, not the admin key.
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url, admin_key=None)
        try:
            for conv in ("telegram:1", "telegram:2"):
                await core.agent.handle(conv, GRANNY, CODING)
            reset = await command(core, GRANNY, "telegram:1", "/reset")
            again = await command(core, GRANNY, "telegram:1", "/reset")
            after = await core.agent.handle("telegram:1", GRANNY, FOLLOW_UP)
            untouched = await core.agent.handle("telegram:2", GRANNY, FOLLOW_UP)
        finally:
            await core.close()
    assert (
        reset == "Forgot this conversation (2 messages), and the proxy forgot its routing context."
    )
    assert again == "No messages kept; the proxy had no routing context for it."
    assert untouched.routed is not None and untouched.routed.source == "prior"
    assert after.routed is not None and after.routed.source != "prior"
    assert after.routed.tier != "strong"


async def test_a_conversation_named_outside_ascii_is_answered_and_reset_at_the_proxy(
    tmp_path, seeded_db, embedder, provider
):
    """`crabbot chat --conv 奶奶家`: a header carries ASCII only, so the key goes percent-encoded,
    in the request and in /reset alike (before, every answer failed)."""
    conv = "console:奶奶家"
    async with running_proxy(seeded_db, embedder, provider.base_url, admin_key=ADMIN_KEY) as proxy:
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url, admin_key=None)
        try:
            answered = await core.agent.handle(conv, GRANNY, CODING)
            reset = await command(core, GRANNY, conv, "/reset")
        finally:
            await core.close()
        (row,) = await proxy.rows()
    assert answered.ok and answered.routed is not None
    assert row["conv_key"].endswith(":console:%E5%A5%B6%E5%A5%B6%E5%AE%B6")
    assert reset.endswith("and the proxy forgot its routing context.")


# -- one conversation, routed by the bot and through the proxy -----------------------------------

CONSOLE_SEQUENCE = [CODING, "早安", "hello", "Thanks! Now explain how the dict keeps the order"]
GROUP_SEQUENCE = [
    (MOM, CODING),
    (GRANNY, "早安"),
    (MOM, FOLLOW_UP),
    (GRANNY, "hello"),
    (ROOT, "帮我把这段话翻译成英文：明天下午三点开会"),
    (GRANNY, "谢谢你"),
]


async def _run_both(core: BotCore) -> tuple[list[str], list[Any]]:
    """The console sequence through the real console adapter (its output lines), then the
    group sequence through the agent (its replies)."""
    out, buffer = capture()
    await run_console(core, "root", scripted(CONSOLE_SEQUENCE), out)
    lines = [line for line in buffer.getvalue().splitlines()[1:] if " · " in line]
    replies = [
        await core.agent.handle("telegram:-100", user, text) for user, text in GROUP_SEQUENCE
    ]
    return lines, replies


async def test_one_sequence_routes_the_same_in_the_bot_and_through_the_proxy(
    tmp_path, seeded_template, embedder, provider
):
    own_db, proxy_db = tmp_path / "own.db", tmp_path / "proxy.db"
    for db in (own_db, proxy_db):
        copy_seeded(seeded_template, db)  # the same seeded pool on both sides
    own = await open_core(own_db, embedder, provider.base_url)
    try:
        own_lines, own_replies = await _run_both(own)
    finally:
        await own.close()
    sent_by_own = len(provider.requests)
    async with running_proxy(proxy_db, embedder, provider.base_url, admin_key=ADMIN_KEY) as proxy:
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url)
        try:
            auto_lines, auto_replies = await _run_both(core)
        finally:
            await core.close()
        rows = await proxy.settled_rows("TRUE", len(CONSOLE_SEQUENCE) + len(GROUP_SEQUENCE))

    # The console shows the tier, category and model the proxy chose, as it shows its own.
    assert len(own_lines) == len(auto_lines) == len(CONSOLE_SEQUENCE)
    assert all(line.endswith("routed by the proxy") for line in auto_lines)
    own_tiers = [line.split(" · ")[0] for line in own_lines]
    auto_tiers = [line.split(" · ")[0] for line in auto_lines]
    assert auto_tiers == own_tiers
    assert [line.split(" · ")[:3] for line in auto_lines] == [
        line.split(" · ")[:3] for line in own_lines
    ]
    # The group, turn by turn: tier, category and source the same both ways.
    own_group = [(r.decision.tier, r.decision.category, r.decision.source) for r in own_replies]
    auto_group = [(r.routed.tier, r.routed.category, r.routed.source) for r in auto_replies]
    assert auto_group == own_group
    assert own_group[2][2] == "prior"  # Mom's follow-up continues her own coding task ...
    assert own_group[1][0] == own_group[3][0] == "cheap"  # ... and 奶奶's greetings stay cheap
    # The proxy routed the words alone: its rows hold them as written, no "root: " before them.
    texts = [text for text in CONSOLE_SEQUENCE] + [text for _, text in GROUP_SEQUENCE]
    assert [row["prompt"] for row in rows] == texts
    # Who spoke went in `name` (OpenAI's characters only) and in one system line.
    last = provider.requests[-1].body["messages"]
    assert provider.requests[-1].model != "auto"
    assert last[-1]["content"] == "谢谢你" and last[-1]["name"].startswith("user_")
    assert {m.get("name") for m in last if m["role"] == "user"} == {
        "Mom",
        "root",
        last[-1]["name"],
    }
    assert last[0]["role"] == "system" and "The last message is from 奶奶." in last[0]["content"]
    assert f"{last[-1]['name']} is 奶奶" in last[0]["content"]
    # The self-routing bot still tells its provider who spoke in the text.
    assert provider.requests[sent_by_own - 1].body["messages"][-1]["content"] == "奶奶: 谢谢你"


async def test_a_failed_answer_still_shows_how_the_proxy_routed_it(
    tmp_path, seeded_db, embedder, provider
):
    provider.fail_status = 500
    async with running_proxy(seeded_db, embedder, provider.base_url) as proxy:
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url)
        out, buffer = capture()
        try:
            await run_console(core, "root", scripted([CODING]), out)
        finally:
            await core.close()
    line = buffer.getvalue().splitlines()[-1]
    assert line == "strong · coding · gpt-4.1 · knn · routed by the proxy · upstream: HTTP 502"


def test_the_proxys_url_is_shown_without_the_credentials_it_carries():
    client = AsyncOpenAI(base_url="http://bot:hunter2@[::1]:8888/v1/", api_key="k")
    assert ProxyAdmin(client, None).where == "http://[::1]:8888/v1"


async def test_crabbot_proxy_takes_its_admin_key_from_the_environment_and_never_logs_it(
    tmp_path, provider
):
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[database]\npath = "{tmp_path / "proxy.db"}"\n'
        "[local]\nenabled = false\n[categorizer]\nenabled = false\n"
        f'[proxy]\nport = 0\nbase_url = "{provider.base_url}"\nmax_retries = 0\n',
        encoding="utf-8",
    )
    env = {"CRABBOT_PROXY_ADMIN_KEY": ADMIN_KEY}
    async with proxy_process(config, "-v", env=env) as (process, line):
        url = line.split()[3]
        core = await open_auto_bot(tmp_path / "bot.db", url)
        try:
            wrong = await open_auto_bot(tmp_path / "other.db", url, admin_key="a-wrong-key")
            try:
                refused = await command(wrong, MOM, "telegram:1", "/routing mode off")
            finally:
                await wrong.close()
            changed = await command(core, MOM, "telegram:1", "/routing mode live")
            reply = await core.agent.handle("telegram:1", MOM, GREETING)
            async with httpx.AsyncClient() as http:
                health = (await http.get(url.removesuffix("/v1") + "/healthz")).json()
        finally:
            await core.close()
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        logged = (await process.stderr.read()).decode()
        assert await process.wait() == 143
    assert refused.startswith("routing mode not changed: the proxy refused the admin key")
    assert changed == "routing mode at the proxy: shadow → live"  # shadow: config's default
    assert health["mode"] == "live"
    assert reply.routed is not None and reply.routed.model is not None
    assert "admin" in logged  # the refusal and the change are logged at debug level ...
    assert ADMIN_KEY not in logged and "a-wrong-key" not in logged  # ... the keys never


async def test_the_family_group_on_telegram_through_a_proxy_on_another_host(
    tmp_path, seeded_db, embedder, provider
):
    telegram = await FakeTelegram().start()
    group, mom, granny, admin = -1001, 42, 43, 7001
    try:
        async with running_proxy(
            seeded_db, embedder, provider.base_url, admin_key=ADMIN_KEY
        ) as proxy:
            config = make_config(
                tmp_path / "bot.db",
                # Whole replies: a reply shown is an exchange kept, so /reset's count is known.
                upstream={
                    "base_url": proxy.url,
                    "model": "auto",
                    "max_retries": 0,
                    "stream": False,
                },
                local={"enabled": False},
                categorizer={"enabled": False},
                admins={"telegram": [admin]},
                access={"everyone": True},
                telegram={"base_url": telegram.base_url, "base_file_url": telegram.base_file_url},
            )
            core = await BotCore.open(config, bot_secrets())
            try:
                async with polling(build_application(core, TOKEN, core.config.telegram)):

                    async def say(text: str, user_id: int, name: str) -> str:
                        count = len(telegram.texts(group))
                        await telegram.push_message(
                            group,
                            text,
                            user_id=user_id,
                            first_name=name,
                            mention=not text.startswith("/"),
                        )
                        await telegram.wait_until(lambda: len(telegram.texts(group)) > count)
                        return telegram.texts(group)[-1]

                    await say(CODING, mom, "Mom")
                    await say("早安", granny, "奶奶")
                    refused = await say("/routing mode off", granny, "奶奶")
                    reset = await say("/reset", mom, "Mom")
                    follow_up = await say(FOLLOW_UP, mom, "Mom")
                    await proxy.gateway.settled()
                    stats = await say("/routing stats", admin, "Dad")
                    changed = await say("/routing mode shadow", admin, "Dad")
            finally:
                await core.close()
            rows = await proxy.settled_rows("TRUE", 3)
    finally:
        await telegram.stop()
    assert follow_up == answer_from(CHEAP)  # Telegram shows the answer alone, no routing line
    assert refused == REFUSAL
    assert (
        reset == "Forgot this conversation (4 messages), and the proxy forgot its routing context."
    )
    assert [(row["tier"], row["source"] == "prior") for row in rows] == [
        ("strong", False),
        ("cheap", False),
        ("cheap", False),  # after /reset, "make it faster" no longer continues the coding task
    ]
    assert "— all time: 3 decisions" in stats
    assert changed == "routing mode at the proxy: live → shadow"
    assert proxy.router.mode == "shadow"
    # 奶奶's greeting reached the provider as her words, with who she is in `name`.
    greeting = provider.requests[1].body["messages"]
    assert greeting[-1]["content"] == "早安" and greeting[-1]["name"].startswith("user_")
    assert greeting[-3] == {"role": "user", "content": CODING, "name": "Mom"}
