"""The Discord adapter with discord.py's own objects (Client, Message, Interaction) whose REST
calls go to a fake Discord API on 127.0.0.1; real router, fake OpenAI-compatible upstream."""

from __future__ import annotations

import base64
from typing import Any

import discord
import pytest

from bot.admin import REFUSAL
from router import Secrets
from tests.bot_helpers import DISCORD_ADMIN, VERBATIM, log_rows, open_core
from tests.discord_helpers import (
    ANN,
    CHANNEL,
    DM_CHANNEL,
    dm_channel,
    guild_channel,
    interaction,
    logged_in,
    message,
    message_data,
    role_payload,
    routing_command,
    slash_event,
)
from tests.fakes.discord_api import BOT_ID, BOT_USER, user_payload
from tests.fence_helpers import code_answer, fenced_code, open_fence, parser_code

EPHEMERAL = 64


@pytest.fixture
async def client(seeded_db, embedder, upstream, discord_api):
    """A logged-in client whose replies come whole (streamed ones have tests of their own)."""
    core = await open_core(seeded_db, embedder, upstream.base_url, upstream={"stream": False})
    async with logged_in(core) as client:
        yield client


@pytest.fixture
async def voice_client(seeded_db, embedder, upstream, discord_api, groq_server):
    """A client with a Groq key, Whisper on the fake Groq, and the categorizer off."""
    secrets = Secrets(groq_api_key="gsk-test", openai_api_key=None, openai_base_url=None)
    core = await open_core(
        seeded_db,
        embedder,
        upstream.base_url,
        secrets=secrets,
        upstream={"stream": False},
        voice={"base_url": groq_server.base_url},
        categorizer={"enabled": False},
    )
    async with logged_in(core) as client:
        yield client


@pytest.fixture
async def streaming(seeded_db, embedder, upstream, discord_api):
    """A logged-in client with streamed replies, edited with no pause between edits."""
    core = await open_core(seeded_db, embedder, upstream.base_url, discord={"edit_interval_s": 0})
    async with logged_in(core) as client:
        yield client


async def test_slash_commands_are_registered_with_mode_choices(client, discord_api):
    assert client.user is not None and client.user.id == BOT_ID
    synced = {command["name"]: command for command in discord_api.synced}
    assert set(synced) == {"routing", "reset", "forget", "whoami", "help"}
    subcommands = {option["name"]: option for option in synced["routing"]["options"]}
    assert set(subcommands) == {"stats", "mode"}
    (mode,) = subcommands["mode"]["options"]
    assert [choice["value"] for choice in mode["choices"]] == ["live", "shadow", "off"]


async def test_mention_is_answered_and_other_channel_messages_are_not(
    client, discord_api, upstream
):
    channel = guild_channel(client)
    await client.on_message(message(client, channel, "dinner at 7?"))
    assert discord_api.messages == [] and upstream.requests == []

    question = "Can you write a SQL query that counts orders per day?"
    await client.on_message(message(client, channel, f"<@{BOT_ID}> {question}", [BOT_USER]))
    (row,) = await log_rows(client.core)
    assert row["conv_key"] == f"discord:{CHANNEL}" and row["prompt"] == question
    assert upstream.models == [client.core.config.models.for_tier(row["tier"])]
    (sent,) = [body for _, body in discord_api.messages]
    assert sent["content"] == f"[{row['model']}] Ann: {question}"
    assert sent["message_reference"]["channel_id"] == CHANNEL
    assert sent["allowed_mentions"]["parse"] == []
    assert discord_api.typing == [CHANNEL]


async def test_a_ping_of_the_bots_own_role_is_a_mention_and_another_roles_is_not(
    client, discord_api, upstream
):
    """Discord's autocomplete offers the role the bot's invite created beside the bot."""
    own_role, family_role = 7001, 7002
    channel = guild_channel(
        client, [role_payload(own_role, "crabbot", BOT_ID), role_payload(family_role, "family")]
    )
    await client.on_message(
        message(client, channel, f"<@&{family_role}> dinner at 7?", role_mentions=[family_role])
    )
    assert discord_api.messages == [] and upstream.requests == []

    question = "what is the capital of Peru?"
    await client.on_message(
        message(client, channel, f"<@&{own_role}> {question}", role_mentions=[own_role])
    )
    (row,) = await log_rows(client.core)
    assert row["prompt"] == question
    (sent,) = [body for _, body in discord_api.messages]
    assert sent["content"].endswith(f"Ann: {question}")

    # Quoted in a reply, that message reads as the bot read it: without the role's ping.
    replied = message_data(channel, f"<@&{own_role}> {question}", author=user_payload(43, "Bo"))
    replied["mention_roles"] = [str(own_role)]
    reply = message(client, channel, f"<@{BOT_ID}> and Chile?", [BOT_USER], replying_to=replied)
    await client.on_message(reply)
    asked = upstream.requests[-1].body["messages"][-1]["content"]
    assert asked == f"Ann: and Chile?\n\n(replying to Bo:)\n> {question}"


async def test_direct_message_is_answered_in_pieces_of_2000(client, discord_api, upstream):
    long_text = " ".join(f"Sentence number {n} of a long answer." for n in range(140))
    assert 4000 < len(long_text) < 6000
    upstream.reply = lambda body: long_text
    await client.on_message(message(client, dm_channel(client), "tell me everything"))
    pieces = discord_api.texts(DM_CHANNEL)
    assert len(pieces) == 3 and all(len(piece) <= 2000 for piece in pieces)
    assert " ".join(pieces) == long_text


async def test_a_long_code_answer_is_code_in_every_piece(client, discord_api, upstream):
    code = parser_code(70)
    upstream.reply = lambda body: code_answer(code)
    await client.on_message(message(client, dm_channel(client), "write me a parser"))
    pieces = discord_api.texts(DM_CHANNEL)
    assert len(pieces) == 3 and all(len(piece) <= 2000 for piece in pieces)
    # Each piece closes the block it opens: no stray backticks, no code read as Markdown.
    assert all(open_fence(piece) is None for piece in pieces)
    assert "\n".join(map(fenced_code, pieces)) == code
    assert pieces[-1].endswith("```\n\nCall step_0 first.")


async def test_routing_mode_slash_command_is_admin_only(client, discord_api):
    router = client.core.router
    assert router.mode == "live"
    mode = routing_command(client, "mode")
    assert [choice.value for choice in mode.parameters[0].choices] == ["live", "shadow", "off"]

    await mode.callback(interaction(client, ANN, 1), mode="off")
    assert router.mode == "live"
    await mode.callback(interaction(client, user_payload(DISCORD_ADMIN, "Dad"), 2), mode="off")
    assert router.mode == "off"

    # Heard at once ("thinking", ephemeral): with a routing proxy the change waits on it.
    assert [(i, body["type"], body["data"]["flags"]) for i, body in discord_api.callbacks] == [
        (1, 5, EPHEMERAL),
        (2, 5, EPHEMERAL),
    ]
    (_, refused), (_, obeyed) = discord_api.followups
    assert refused["content"] == REFUSAL and refused["flags"] == EPHEMERAL
    assert obeyed["content"] == "routing mode: live → off"


async def test_routing_stats_slash_command_defers_then_follows_up(client, discord_api, monkeypatch):
    stats = routing_command(client, "stats")
    await client.on_message(message(client, dm_channel(client), "good morning"))
    answered_before_query: list[int] = []
    stats_text = client.core.admin.stats_text

    async def slow_query(*args: Any, **kwargs: Any) -> str:
        answered_before_query.append(len(discord_api.callbacks))
        return await stats_text(*args, **kwargs)

    monkeypatch.setattr(client.core.admin, "stats_text", slow_query)
    await stats.callback(interaction(client, user_payload(DISCORD_ADMIN, "Dad"), 3))
    await stats.callback(interaction(client, ANN, 4))
    # Discord heard back (deferred: "thinking", ephemeral) before the query ran, so a slow
    # query cannot miss its 3 s deadline; the text follows up.
    assert answered_before_query == [1]
    assert [(i, body["type"], body["data"]["flags"]) for i, body in discord_api.callbacks] == [
        (3, 5, EPHEMERAL),
        (4, 5, EPHEMERAL),
    ]
    (admin_token, admin_view), (other_token, other_view) = discord_api.followups
    assert (admin_token, other_token) == ("token-3", "token-4")
    text = admin_view["content"]
    assert text.startswith("```\ncrabbot routing\nmode live") and "1 decisions" in text
    assert admin_view["flags"] == EPHEMERAL
    assert other_view["content"] == REFUSAL


async def test_reply_to_a_message_deleted_meanwhile_still_goes_out(client, discord_api):
    question = message(client, guild_channel(client), f"<@{BOT_ID}> good morning", [BOT_USER])
    discord_api.deleted.add(question.id)  # deleted before the answer is ready
    await client.on_message(question)
    (sent,) = [body for _, body in discord_api.messages]
    assert sent["message_reference"]["message_id"] == question.id
    assert sent["message_reference"]["fail_if_not_exists"] is False
    assert sent["content"].endswith("good morning")


async def test_reset_slash_command_forgets_only_this_channel(client, discord_api):
    await client.on_message(message(client, dm_channel(client), "remember: I like tea"))
    await client.core.memory.add_exchange("discord:1", None, "other", "channel")
    reset = client.tree.get_command("reset")
    await reset.callback(interaction(client, ANN, 5))
    assert await client.core.memory.history(f"discord:{DM_CHANNEL}") == []
    assert len(await client.core.memory.history("discord:1")) == 2
    ((_, deferral),) = discord_api.callbacks
    assert deferral["type"] == 5 and "data" not in deferral  # not ephemeral: the channel sees it
    ((_, body),) = discord_api.followups
    assert body["content"] == "Forgot this conversation (2 messages) and its routing context."


async def test_forget_slash_command_erases_only_the_callers_words(client, discord_api, monkeypatch):
    key = f"discord:{DM_CHANNEL}"
    await client.on_message(message(client, dm_channel(client), "my allergy list: peanuts"))
    await client.core.memory.add_exchange(key, "Bob", "bob's question", "answer", "discord:99")
    answered_before_erasing: list[int] = []
    erase = client.core.admin.forget

    async def slow_erasure(*args: Any, **kwargs: Any) -> str:
        answered_before_erasing.append(len(discord_api.callbacks))
        return await erase(*args, **kwargs)

    monkeypatch.setattr(client.core.admin, "forget", slow_erasure)
    forget = client.tree.get_command("forget")
    await forget.callback(interaction(client, ANN, 6))
    kept = [turn.content for turn in await client.core.memory.history(key)]
    (row,) = await log_rows(client.core)
    assert kept == ["bob's question", "answer"]
    assert row["user_key"] == "discord:4242" and row["prompt"] == "" and row["tier"]
    # Discord heard back before the erasure ran (it wants an answer within 3 s, and an erasure
    # of a long history, or one that asks the routing proxy, can take longer).
    assert answered_before_erasing == [1]
    ((_, deferral),) = discord_api.callbacks
    assert (deferral["type"], deferral["data"]["flags"]) == (5, EPHEMERAL)
    ((_, body),) = discord_api.followups
    assert body["content"].startswith("Done: erased 2 memory messages, 1 routing-log prompt")
    assert body["flags"] == EPHEMERAL


async def test_forget_slash_command_clears_the_callers_words_quoted_in_anothers_reply(
    client, discord_api, upstream
):
    upstream.reply = lambda body: "Noted."  # an answer that repeats nobody's words
    key, channel, dad = f"discord:{CHANNEL}", guild_channel(client), user_payload(4343, "Dad")
    notice = f"<@{BOT_ID}> Our passport numbers for the booking: X1234567 and X7654321"
    await client.on_message(message(client, channel, notice, [BOT_USER], author=dad))
    replied = message_data(channel, notice, author=dad, message_id=4999)
    await client.on_message(
        message(client, channel, f"<@{BOT_ID}> book it for Friday", [BOT_USER], replying_to=replied)
    )
    await client.core.memory.flush()  # written behind the reply
    (_, _, reply, _) = await client.core.memory.export(key)
    assert (reply["user_key"], reply["quoted_key"]) == ("discord:4242", "discord:4343")
    assert "X1234567" in reply["quote_excerpt"]
    forget = client.tree.get_command("forget")
    data = slash_event(dad, 8, "forget")
    await forget.callback(discord.Interaction(data=data, state=client._connection))
    kept = [turn.content for turn in await client.core.memory.history(key)]
    assert kept == ["book it for Friday", "Noted."]  # Ann's words, without Dad's
    ((_, body),) = discord_api.followups
    assert body["content"] == (
        "Done: erased 2 memory messages, 1 quote in others' replies, 1 routing-log prompt,"
        " 0 pool entries of yours from this conversation."
    )


ANSWER = "Rice first, then the soup, and the fish goes in last so it stays tender."


async def test_streamed_reply_edits_one_message_in_place(streaming, discord_api, upstream):
    upstream.reply = lambda body: ANSWER

    async def shown_in_place(so_far: str) -> None:
        await discord_api.wait_until(lambda: discord_api.shown(CHANNEL) == [so_far.strip()])

    upstream.gate = shown_in_place
    question = message(streaming, guild_channel(streaming), f"<@{BOT_ID}> dinner?", [BOT_USER])
    await streaming.on_message(question)
    assert discord_api.shown(CHANNEL) == [ANSWER]
    (sent,) = [body for _, body in discord_api.messages]  # one message, then edits
    assert sent["content"] == "Rice" and sent["message_reference"]["message_id"] == question.id
    contents = [body["content"] for _, body in discord_api.edits]
    assert contents[:2] == ["Rice first,", "Rice first, then"] and contents[-1] == ANSWER
    (row,) = await log_rows(streaming.core)
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0


async def test_streamed_reply_longer_than_2000_continues_in_further_messages(
    streaming, discord_api, upstream
):
    long_text = " ".join(f"Sentence number {n} of a long answer." for n in range(140))
    upstream.reply = lambda body: long_text
    await streaming.on_message(message(streaming, dm_channel(streaming), "tell me everything"))
    pieces = discord_api.shown(DM_CHANNEL)
    assert len(pieces) == 3 and all(len(piece) <= 2000 for piece in pieces)
    assert " ".join(pieces) == long_text


async def test_streamed_reply_survives_a_failed_edit(streaming, discord_api, upstream):
    upstream.reply = lambda body: ANSWER

    async def deleted_once_shown(so_far: str) -> None:
        await discord_api.wait_until(lambda: len(discord_api.messages) == 1)
        discord_api.deleted.update(discord_api.current)  # someone deletes the half-written reply

    upstream.gate = deleted_once_shown
    await streaming.on_message(message(streaming, dm_channel(streaming), "dinner?"))
    assert discord_api.shown(DM_CHANNEL) == [ANSWER]
    assert [body["content"] for _, body in discord_api.messages] == ["Rice", ANSWER]
    assert streaming.core.counters["stream_edit_fallbacks"] == 1


async def test_reply_context_quoted_message_reaches_the_model_and_the_router(
    client, discord_api, upstream
):
    channel = guild_channel(client)
    notice = "School notice: the trip on Friday is moved to Monday; bring lunch and a raincoat."
    dad = message_data(channel, notice, author=user_payload(4343, "Dad"), message_id=4999)
    await client.on_message(
        message(client, channel, f"<@{BOT_ID}> 总结一下", [BOT_USER], replying_to=dad)
    )
    (row,) = await log_rows(client.core)
    assert row["prompt"] == "总结一下"  # the log keeps Ann's words; Dad's notice is his
    asked = upstream.requests[0].body["messages"][-1]["content"]
    assert asked == f"Ann: 总结一下\n\n(replying to Dad:)\n> {notice}"


async def test_a_clear_request_replying_to_chatter_routes_on_its_own_words(client, upstream):
    channel = guild_channel(client)
    grandma = user_payload(4343, "Grandma")
    chatter = f"<@{BOT_ID}> 早安大家！今天天氣真好"
    await client.on_message(message(client, channel, chatter, [BOT_USER], author=grandma))
    replied = message_data(channel, chatter, author=grandma, message_id=4999)
    request = "Pythonでファイルを一行ずつ読むコードを書いてください"
    embedder = client.core.router.embedder
    misses = embedder.cache_misses
    await client.on_message(
        message(client, channel, f"<@{BOT_ID}> {request}", [BOT_USER], replying_to=replied)
    )
    # At most one new embedding (the request's, unless an earlier test embedded the same
    # text): the message replied to was routed, its vector is cached.
    assert embedder.cache_misses <= misses + 1
    greeting, asked = await log_rows(client.core)
    assert greeting["tier"] == "cheap"
    assert (asked["prompt"], asked["tier"], asked["source"]) == (request, "strong", "knn")
    content = upstream.requests[1].body["messages"][-1]["content"]
    assert content == f"Ann: {request}\n\n(replying to Grandma:)\n> 早安大家！今天天氣真好"


JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8


async def test_image_attachment_goes_to_the_vision_model_routed_on_the_caption(
    client, discord_api, upstream
):
    photo = discord_api.attachment(JPEG, "plant.jpg", "image/jpeg")
    question = message(
        client,
        guild_channel(client),
        f"<@{BOT_ID}> 这是什么植物？",
        [BOT_USER],
        attachments=[photo],
    )
    await client.on_message(question)
    (row,) = await log_rows(client.core)
    assert row["prompt"] == "这是什么植物？" and discord_api.downloads == ["plant.jpg"]
    content = upstream.requests[0].body["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "Ann: 这是什么植物？"}
    assert content[1]["image_url"]["url"] == (
        f"data:image/jpeg;base64,{base64.b64encode(JPEG).decode()}"
    )
    history = await client.core.memory.history(f"discord:{CHANNEL}")
    assert history[0].content == "[photo: 这是什么植物？]"


async def test_photo_alone_in_a_dm_routes_to_the_image_tier(client, discord_api, upstream):
    photo = discord_api.attachment(JPEG, "menu.jpg", "image/jpeg")
    await client.on_message(message(client, dm_channel(client), "", attachments=[photo]))
    (row,) = await log_rows(client.core)
    assert (row["tier"], row["source"]) == ("medium", "fixed")
    assert "image without text" in row["error"]
    assert discord_api.texts(DM_CHANNEL)[0].endswith("Ann: (photo) (+1 images)")


async def test_photo_too_big_gets_a_clear_reply(client, discord_api, upstream):
    huge = discord_api.attachment(JPEG, "scan.png", "image/png", size=30 * 1024 * 1024)
    await client.on_message(
        message(client, dm_channel(client), "今日の献立は？", attachments=[huge])
    )
    assert discord_api.texts(DM_CHANNEL) == ["画像が大きすぎます（30.0 MB、上限は 10 MB）。"]
    assert discord_api.downloads == [] and upstream.requests == []


async def test_a_picture_too_big_is_named_and_the_others_are_answered(
    client, discord_api, upstream
):
    huge = discord_api.attachment(JPEG, "scan.png", "image/png", size=30 * 1024 * 1024)
    photo = discord_api.attachment(JPEG, "plant.jpg", "image/jpeg")
    await client.on_message(
        message(client, dm_channel(client), "which plant is this?", attachments=[huge, photo])
    )
    (reply,) = discord_api.texts(DM_CHANNEL)
    skipped, answer = reply.split("\n\n", 1)
    assert skipped == "Photo 1 of 2: That picture is too big for me (30.0 MB; the limit is 10 MB)."
    assert answer.endswith("Ann: which plant is this? (+1 images)")
    assert discord_api.downloads == ["plant.jpg"]
    (request,) = upstream.requests
    parts = request.body["messages"][-1]["content"]
    assert [part["type"] for part in parts] == ["text", "image_url"]
    assert client.core.counters["image_too_big"] == 1


async def test_voice_message_transcription_is_answered_with_a_quote_line(
    voice_client, discord_api, upstream, groq_server
):
    groq_server.transcript = "明天几点出发？"
    voice = discord_api.attachment(b"OggS" * 100, "voice-message.ogg", "audio/ogg")
    voice["duration_secs"] = 7.4
    await voice_client.on_message(
        message(voice_client, dm_channel(voice_client), "", attachments=[voice])
    )
    assert groq_server.transcriptions[0]["file"]["filename"] == "voice-message.ogg"
    (row,) = await log_rows(voice_client.core)
    assert row["prompt"] == "明天几点出发？"
    (text,) = discord_api.texts(DM_CHANNEL)
    assert text.startswith("> [voice 0:07] 明天几点出发？\n\n") and text.endswith(
        "Ann: 明天几点出发？"
    )


@pytest.mark.parametrize("answer", VERBATIM)
async def test_every_character_the_model_wrote_reaches_discord(
    client, streaming, discord_api, upstream, answer
):
    # Discord renders the Markdown itself: the text goes as written, whole or streamed.
    upstream.reply = lambda body: answer
    await client.on_message(message(client, dm_channel(client), "explain"))
    await streaming.on_message(
        message(streaming, guild_channel(streaming), f"<@{BOT_ID}> explain", [BOT_USER])
    )
    assert discord_api.shown(DM_CHANNEL) == [answer]
    assert discord_api.shown(CHANNEL) == [answer]


@pytest.mark.parametrize("ping", [True, False])
async def test_photo_without_caption_replying_to_the_bot_routes_to_the_image_tier(
    client, discord_api, upstream, ping
):
    channel = guild_channel(client)
    earlier = "Fixed:\n```python\ndef dedupe(xs):\n    return list(dict.fromkeys(xs))\n```"
    answer = message_data(channel, earlier, author=BOT_USER, message_id=4998)
    photo = discord_api.attachment(JPEG, "error.jpg", "image/jpeg")
    # A reply pings its author unless the sender turns that off; either way it is for the bot.
    mentions = [BOT_USER] if ping else []
    await client.on_message(
        message(client, channel, "", mentions, replying_to=answer, attachments=[photo])
    )
    (row,) = await log_rows(client.core)
    tier = client.core.config.routing.image_tier
    assert (row["tier"], row["source"]) == (tier, "fixed") and tier != "strong"
    assert "image without text" in row["error"] and discord_api.downloads == ["error.jpg"]
    text = upstream.requests[0].body["messages"][-1]["content"][0]["text"]
    assert text.startswith("Ann: (replying to crabbot:)") and "> def dedupe(xs):" in text


async def test_thanks_replying_to_the_bot_s_code_answer_routes_cheap(client, upstream):
    channel = guild_channel(client)
    code = "```python\ndef dedupe(xs):\n    return list(dict.fromkeys(xs))\n```\nOrder is kept."
    upstream.reply = lambda body: code
    request = "Write a Python function that removes duplicates from a list but keeps the order"
    await client.on_message(message(client, channel, f"<@{BOT_ID}> {request}", [BOT_USER]))
    answer = message_data(channel, code, author=BOT_USER, message_id=4998)
    await client.on_message(
        message(client, channel, "thanks it works!!", [BOT_USER], replying_to=answer)
    )
    asked, thanks = await log_rows(client.core)
    assert asked["tier"] == "strong"
    # Read with the code under it, the thanks was code; the request it answered is its context.
    assert (thanks["prompt"], thanks["category"], thanks["tier"]) == (
        "thanks it works!!",
        "casual",
        "cheap",
    )
