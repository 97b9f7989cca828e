"""The routing proxy over real HTTP: the openai SDK as its client, a real uvicorn server, a fake
provider on 127.0.0.1 that records each request's model, and the real bundled embedding model."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.cli import main
from router import ConfigError, Secrets
from router.config import ProxySettings
from router.proxy.access import ClientKey
from router.proxy.provider import HOP_HEADER, Provider
from router.proxy.server import ProxyServer
from router.store.erasure import Scope
from tests.fakes.openai_api import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    answer_from,
    stream_pieces,
)
from tests.proxy_helpers import (
    CHEAP,
    CLIENT_KEY,
    CODING,
    GREETING,
    PROVIDER_KEY,
    STRONG,
    running_proxy,
    user,
)

# -- model="auto" --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tier", "model"), [(CODING, "strong", STRONG), (GREETING, "cheap", CHEAP)]
)
async def test_auto_routes_by_task(proxy, provider, text, tier, model):
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=user(text)
        )
    answer = raw.parse()
    assert provider.models == [model]
    assert answer.model == model
    assert answer.choices[0].message.content == answer_from(model)
    assert raw.headers["x-crabbot-tier"] == tier
    assert raw.headers["x-crabbot-category"] in ("coding", "reasoning", "casual", "simple_lookup")
    assert raw.headers["x-crabbot-source"] in ("knn", "prior", "fallback")
    # The provider gets the proxy's key, never the client's; the hop marker guards against loops.
    assert provider.requests[0].authorization == f"Bearer {PROVIDER_KEY}"
    assert provider.requests[0].headers.get(HOP_HEADER.lower()) == "1"
    (row,) = await proxy.settled_rows("prompt_tokens IS NOT NULL", 1)
    assert (row["tier"], row["model"], row["prompt"]) == (tier, model, text)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert row["decision_id"] == raw.headers["x-crabbot-decision-id"]


@pytest.mark.parametrize(("text", "model"), [(CODING, STRONG), (GREETING, CHEAP)])
async def test_auto_streams_to_the_end(proxy, provider, text, model):
    async with proxy.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=user(text), stream=True
        )
        chunks = [chunk async for chunk in raw.parse()]
    assert provider.models == [model]
    assert provider.requests[0].body["stream_options"] == {"include_usage": True}
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-crabbot-tier"] == ("strong" if model == STRONG else "cheap")
    assert {chunk.model for chunk in chunks} == {model}
    # The client did not ask for usage, so the usage-only chunk the proxy asked for is dropped.
    assert all(chunk.choices for chunk in chunks)
    text_out = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text_out == answer_from(model)
    assert chunks[-1].choices[0].finish_reason == "stop"
    (row,) = await proxy.settled_rows("prompt_tokens IS NOT NULL", 1)
    assert (row["model"], row["prompt_tokens"]) == (model, PROMPT_TOKENS)


async def test_a_locked_database_delays_no_answer_and_loses_no_row(proxy, provider):
    """Another process holds the database's write lock: answers still come at once, and their
    rows are written when the lock lifts."""
    locker = sqlite3.connect(proxy.config.database.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        async with proxy.client() as client:
            for _ in range(3):
                answer = await client.chat.completions.create(model="auto", messages=user(GREETING))
                assert answer.choices[0].message.content
        assert proxy.router.log.writer.depth == 3
    finally:
        locker.execute("COMMIT")
        locker.close()
    rows = await proxy.settled_rows("outcome = 'completed'", 3)
    assert all(row["prompt_tokens"] == PROMPT_TOKENS for row in rows)
    assert proxy.router.counters["log_rows_dropped"] == 0


async def test_a_provider_that_refuses_stream_options_still_streams(proxy, provider, caplog):
    """A provider that predates `stream_options` (Azure's older API versions) refuses it with a
    400. Where the proxy asked for it, not the client, the answers still stream, asked again
    without it; later streams do not ask, the refusal is logged and counted once though three
    streams met it at once, and a client that sends it itself gets the refusal."""
    provider.refuse_stream_options = True
    with caplog.at_level(logging.WARNING, logger="router.proxy.provider"):
        async with proxy.client() as client:

            async def streamed() -> str:
                stream = await client.chat.completions.create(
                    model="auto", messages=user(GREETING), stream=True
                )
                return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])

            assert await asyncio.gather(*(streamed() for _ in range(3))) == [answer_from(CHEAP)] * 3
            assert await streamed() == answer_from(CHEAP)
            with pytest.raises(openai.BadRequestError, match="stream_options"):
                await client.chat.completions.create(
                    model="auto",
                    messages=user(GREETING),
                    stream=True,
                    stream_options={"include_usage": True},
                )
    asked = ["stream_options" in seen.body for seen in provider.requests]
    assert asked[0] and asked[-2:] == [False, True]
    assert proxy.router.counters["stream_usage_refused"] == 1
    assert sum("refuses stream_options" in record.message for record in caplog.records) == 1
    rows = await proxy.settled_rows("outcome = 'completed'", 4)
    assert [row["prompt_tokens"] for row in rows] == [None] * 4


async def test_an_error_that_only_quotes_stream_options_is_no_refusal(proxy, provider):
    """A 400 whose message quotes the user's words, "stream_options" among them, fails again
    without it: the client gets that error, and later streams still ask for token counts."""
    provider.fail_status, provider.fail_count, provider.echo_secrets = 400, 2, True
    asked = user("what does stream_options do in the openai api")
    async with proxy.client() as client:
        with pytest.raises(openai.BadRequestError, match="stream_options do"):
            await client.chat.completions.create(model="auto", messages=asked, stream=True)
        stream = await client.chat.completions.create(
            model="auto", messages=user(GREETING), stream=True
        )
        assert [chunk async for chunk in stream]
    assert ["stream_options" in seen.body for seen in provider.requests] == [True, False, True]
    assert not proxy.router.counters["stream_usage_refused"]
    (row,) = await proxy.settled_rows("outcome = 'completed'", 1)
    assert row["prompt_tokens"] == PROMPT_TOKENS


async def test_stream_relays_usage_when_the_client_asks(proxy, provider):
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="auto",
            messages=user(GREETING),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == COMPLETION_TOKENS


async def test_session_key_from_header_or_user_field(proxy, provider):
    async with proxy.client(default_headers={"X-Session-Key": "telegram:42"}) as client:
        await client.chat.completions.create(model="auto", messages=user(CODING))
    async with proxy.client() as client:
        await client.chat.completions.create(model="auto", messages=user(GREETING), user="ann")
    rows = await proxy.rows()
    # In the key's namespace (this key has no label: a fingerprint of it).
    namespace = ClientKey(CLIENT_KEY.encode(), None).namespace
    assert [row["conv_key"] for row in rows] == [
        f"proxy:{namespace}:telegram:42",
        f"proxy:{namespace}:ann",
    ]
    assert [row["user_key"] for row in rows] == [None, None]  # `user` alone: the conversation


async def test_routes_the_last_user_message(proxy, provider):
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "text", "text": GREETING}]},
        {"role": "assistant", "content": "Morning!"},
        {"role": "user", "content": [{"type": "text", "text": CODING}]},
    ]
    async with proxy.client() as client:
        answer = await client.chat.completions.create(model="auto", messages=messages)
    assert answer.model == STRONG
    assert provider.requests[0].body["messages"] == messages
    assert [row["prompt"] for row in await proxy.rows()] == [CODING]


async def test_a_group_history_gives_each_speaker_their_own_context(proxy, provider):
    """Grandma's greeting between them does not decide what the grandson's "why?" follows."""
    messages = [
        {"role": "user", "name": "kenji", "content": "write a bash loop that renames every .JPG"},
        {"role": "assistant", "content": "for f in *.JPG; do ...; done"},
        {"role": "user", "name": "grandma", "content": "おはよう〜今日は寒いね"},
        {"role": "assistant", "content": "おはようございます!"},
        {"role": "user", "name": "kenji", "content": "why?"},
    ]
    async with proxy.client() as client:
        his = await client.chat.completions.create(model="auto", messages=messages)
        messages[-1]["name"] = "grandma"
        hers = await client.chat.completions.create(model="auto", messages=messages)
    assert his.model == STRONG
    assert hers.model != STRONG


FAMILY_TURNS = [
    ("kenji", "write a bash loop that renames every .JPG"),
    ("grandma", "おじいちゃんの誕生日に短い詩を書いて"),
    ("kenji", "why?"),
]


@pytest.mark.parametrize("field", ["user", "safety_identifier", None])
async def test_in_a_keyed_group_the_end_user_field_gives_each_speaker_their_own_context(
    proxy, provider, field
):
    """One session key for the family, each request sent alone (no history): the body's end
    user (`user`, or its successor `safety_identifier`) says who speaks, so grandma's request
    between them does not decide what kenji's "why?" follows. Without it, it does."""
    tiers = []
    async with proxy.client(default_headers={"X-Session-Key": "telegram:-100"}) as client:
        for who, text in FAMILY_TURNS:
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=user(text), extra_body={field: who} if field else None
            )
            tiers.append(raw.headers["x-crabbot-tier"])
    assert tiers == ["strong", "medium", "strong" if field else "medium"]
    rows = await proxy.rows()
    assert len({row["conv_key"] for row in rows}) == 1  # the end user is not the conversation
    # Kept in the client's namespace: `crabbot forget --user proxy:<namespace>:kenji` finds it.
    namespace = ClientKey(CLIENT_KEY.encode(), None).namespace
    speakers = [f"proxy:{namespace}:{who}" if field else None for who, _ in FAMILY_TURNS]
    assert [row["user_key"] for row in rows] == speakers


async def test_a_request_that_names_its_model_keeps_whose_words_and_their_erasure_reaches_it(
    plain, provider
):
    """A tier alias or a provider model named by the client is logged with its speaker, as
    `auto` is: erasing grandma clears her prompts there too, and no one else's."""
    async with plain.client(default_headers={"X-Session-Key": "telegram:-100"}) as client:
        for model in ("cheap", CHEAP, "auto"):
            await client.chat.completions.create(
                model=model, messages=user(f"grandma's words via {model}"), user="grandma"
            )
        await client.chat.completions.create(model="cheap", messages=user("kenji's"), user="kenji")
    rows = await plain.settled_rows("TRUE", 4)
    namespace = ClientKey(CLIENT_KEY.encode(), None).namespace
    grandma = f"proxy:{namespace}:grandma"
    assert [row["user_key"] for row in rows] == [grandma] * 3 + [f"proxy:{namespace}:kenji"]
    await plain.router.erase(Scope(user_key=grandma))
    prompts = [row["prompt"] for row in await plain.rows()]
    assert prompts[:3] == ["", "", ""] and prompts[3] == "kenji's"


async def test_an_end_user_id_keeps_a_history_with_other_peoples_names_as_context(proxy, provider):
    """A hashed end-user id never matches the display names on others' messages: the history
    is read whole, as without it, and "why?" still follows the coding request before the
    greeting."""
    messages = [
        {"role": "user", "content": "write a bash loop that renames every .JPG"},
        {"role": "assistant", "content": "for f in *.JPG; do ...; done"},
        {"role": "user", "name": "grandma", "content": "おはよう〜今日は寒いね"},
        {"role": "assistant", "content": "おはようございます!"},
        {"role": "user", "content": "why?"},
    ]
    async with proxy.client() as client:
        answer = await client.chat.completions.create(
            model="auto", messages=messages, safety_identifier="h_9f2c"
        )
    assert answer.model == STRONG


async def test_a_client_cannot_speak_as_a_bot_user_and_a_long_end_user_id_names_nobody(
    proxy, provider
):
    async with proxy.client(default_headers={"X-Session-Key": "family"}) as client:
        for who in ("telegram:12345", "x" * 300):
            await client.chat.completions.create(
                model="auto", messages=user(GREETING), extra_body={"safety_identifier": who}
            )
    namespace = ClientKey(CLIENT_KEY.encode(), None).namespace
    rows = await proxy.rows()
    assert [row["user_key"] for row in rows] == [f"proxy:{namespace}:telegram:12345", None]


async def test_an_end_user_field_that_is_not_a_string_is_refused(proxy, provider):
    async with proxy.client() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="auto", messages=user(CODING), extra_body={"safety_identifier": 7}
            )
    assert "safety_identifier must be a string" in str(refused.value)
    assert provider.requests == []


async def test_nothing_to_read_still_gets_an_answer_on_the_default_tier(proxy, provider):
    """OpenAI accepts a system prompt alone, or a picture alone: so does the proxy."""
    picture = {"type": "image_url", "image_url": {"url": "https://example.invalid/plant.jpg"}}
    system_only = [{"role": "system", "content": "Say hello to the family."}]
    image_after_text = [
        {"role": "user", "content": CODING},
        {"role": "assistant", "content": "Here you go."},
        {"role": "user", "content": [picture]},
    ]
    async with proxy.client() as client:
        alone = await client.chat.completions.with_raw_response.create(
            model="auto", messages=system_only
        )
        by_earlier_text = await client.chat.completions.with_raw_response.create(
            model="auto", messages=image_after_text
        )
        empty = await client.chat.completions.with_raw_response.create(
            model="auto", messages=user("   ")
        )
    for raw in (alone, empty):
        assert raw.status_code == 200 and raw.headers["x-crabbot-source"] == "fixed"
        assert raw.headers["x-crabbot-tier"] == "medium"
    assert by_earlier_text.headers["x-crabbot-tier"] == "strong"
    assert len(provider.requests) == 3
    rows = await proxy.rows()
    assert [(row["source"], row["error"]) for row in rows[::2]] == [
        ("fixed", "no user text to route: the default tier")
    ] * 2


# -- aliases and passthrough -----------------------------------------------------------------------


async def test_tier_alias_uses_the_tier_model(plain, provider):
    async with plain.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="strong", messages=user(GREETING), temperature=0.2
        )
    assert provider.models == [STRONG]
    assert provider.requests[0].body["temperature"] == 0.2
    assert raw.parse().model == STRONG
    assert (raw.headers["x-crabbot-tier"], raw.headers["x-crabbot-source"]) == ("strong", "alias")
    # No routing decision was made, but the spending is logged.
    (row,) = await plain.settled_rows("source = 'alias'", 1)
    assert (row["tier"], row["model"], row["outcome"]) == ("strong", STRONG, "completed")
    assert row["prompt_tokens"] == PROMPT_TOKENS and row["category"] is None


async def test_other_names_pass_through(plain, provider):
    async with plain.client() as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="llama-3.3-70b-versatile", messages=user(CODING)
        )
    assert provider.models == ["llama-3.3-70b-versatile"]
    assert raw.parse().model == "llama-3.3-70b-versatile"
    assert raw.headers["x-crabbot-source"] == "passthrough"
    (row,) = await plain.settled_rows("source = 'passthrough'", 1)
    assert (row["tier"], row["model"], row["outcome"]) == (
        None,
        "llama-3.3-70b-versatile",
        "completed",
    )


async def test_models_list_and_health(plain):
    async with plain.client() as client:
        models = [model.id async for model in client.models.list()]
    assert models == ["auto", "cheap", "medium", "strong", CHEAP, "gpt-4.1-mini", STRONG]
    async with httpx.AsyncClient() as http:
        anyone = await http.get(plain.url.removesuffix("/v1") + "/healthz")
        with_key = await http.get(
            plain.url.removesuffix("/v1") + "/healthz",
            headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        )
    assert (anyone.status_code, anyone.json()) == (200, {"status": "ok"})
    assert with_key.json() == {"status": "ok", "mode": "live", "pool_size": 0}


# -- refusals -----------------------------------------------------------------------------------


async def test_wrong_client_key_gets_401(plain, provider):
    async with plain.client(key="wrong-key") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model="auto", messages=user(GREETING))
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    assert "wrong-key" not in caught.value.message
    assert provider.requests == []
    assert await plain.rows() == []


async def test_client_keys_from_the_environment(tmp_path, provider, monkeypatch):
    monkeypatch.setenv("CRABBOT_PROXY_KEYS", " family-key , , second-key ")
    env_keys = tuple(Secrets().proxy_client_keys())
    assert env_keys == ("family-key", "second-key")
    async with running_proxy(
        tmp_path / "env.db", None, provider.base_url, env_keys=env_keys, client_keys=[]
    ) as proxy:
        async with proxy.client(key="second-key") as client:
            reply = await client.chat.completions.create(model="cheap", messages=user(GREETING))
        async with proxy.client(key=CLIENT_KEY) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="cheap", messages=user(GREETING))
    assert reply.model == CHEAP
    assert len(provider.requests) == 1


async def test_missing_client_key_gets_401(plain, provider):
    # The SDK will not send a request without a key, so this one goes out by hand.
    body = {"model": "auto", "messages": user(GREETING)}
    async with httpx.AsyncClient() as http:
        response = await http.post(plain.url + "/chat/completions", json=body)
        models = await http.get(plain.url + "/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert models.status_code == 401
    assert provider.requests == []


async def test_malformed_body_via_sdk(plain, provider):
    async with plain.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="auto", messages=[])
    assert caught.value.status_code == 400
    assert caught.value.param == "messages"
    assert provider.requests == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"messages": user("hi")}).encode(), "model"),
        (json.dumps({"model": "auto"}).encode(), "messages"),
        (json.dumps({"model": "auto", "messages": "hi"}).encode(), "messages"),
        (
            json.dumps({"model": "auto", "messages": [{"role": "user", "content": 5}]}).encode(),
            "content",
        ),
        (json.dumps({"model": 7, "messages": user("hi")}).encode(), "model"),
        (json.dumps({"model": "auto", "messages": user("hi"), "stream": "yes"}).encode(), "stream"),
        (json.dumps({"model": "auto", "messages": user("hi"), "user": 3}).encode(), "user"),
    ],
)
async def test_bad_bodies_get_400(plain, provider, body, says):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            plain.url + "/chat/completions",
            content=body,
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"},
        )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert says in error["message"]
    assert provider.requests == []


async def test_unknown_path_gets_openai_error(plain):
    async with httpx.AsyncClient() as http:
        response = await http.get(plain.url + "/nope")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"


async def test_refuses_its_own_forwarded_request(plain, provider):
    async with plain.client(default_headers={HOP_HEADER: "1"}) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="auto", messages=user(GREETING))
    assert caught.value.status_code == 508
    assert provider.requests == []


# -- provider failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_provider_down_gets_502(proxy, provider, stream):
    await provider.stop()
    async with proxy.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="auto", messages=user(CODING), stream=stream)
    assert caught.value.status_code == 502
    assert caught.value.type == "upstream_error"
    assert PROVIDER_KEY not in str(caught.value.body)
    assert caught.value.response.headers["x-crabbot-tier"] == "strong"
    (row,) = await proxy.rows()
    assert "provider: could not reach the provider" in row["error"]


async def test_stream_cut_by_the_provider_ends_with_an_error_event(proxy, provider):
    provider.cut_stream_after = 2
    pieces: list[str] = []
    async with proxy.client() as client:
        stream = await client.chat.completions.create(
            model="auto", messages=user(CODING), stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "".join(stream_pieces(answer_from(STRONG))[:2])  # CODING: strong
    assert "provider" in caught.value.message
    (row,) = await proxy.rows()
    assert "provider:" in row["error"]


async def test_provider_error_gets_502_without_its_message(plain, provider):
    provider.fail_status = 401  # e.g. the proxy's provider key is wrong: not the client's business
    async with plain.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="cheap", messages=user(GREETING))
    assert caught.value.status_code == 502
    assert "HTTP 401" in caught.value.message


async def test_server_turns_nagle_off():
    # With Nagle on, each response's body waits ~40 ms for the client's delayed ACK.
    flags: list[int] = []

    async def handler(request: Request) -> Response:
        for connection in server.server.server_state.connections:
            sock = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        return Response(b"ok")

    server = await ProxyServer(Starlette(routes=[Route("/x", handler)]), "127.0.0.1", 0).start()
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{server.port}/x")).status_code == 200
    finally:
        await server.stop()
    assert flags and all(flags)


# -- load ---------------------------------------------------------------------------------------

MIXED = [
    CODING,
    GREETING,
    "晚饭七点吃吗？",
    "SQLでユーザーごとの注文数を数えるクエリを書いて",
    "thanks!!",
]


async def test_200_requests_from_20_clients(proxy, provider):
    async def one_client(number: int) -> list[str]:
        answers = []
        async with proxy.client() as client:
            for turn in range(10):
                text = f"{MIXED[(number + turn) % len(MIXED)]} ({number}.{turn})"
                if turn % 2:
                    stream = await client.chat.completions.create(
                        model="auto", messages=user(text), stream=True
                    )
                    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
                    answers.append("".join(parts))
                else:
                    answer = await client.chat.completions.create(
                        model="auto", messages=user(text), user=f"client-{number}"
                    )
                    answers.append(answer.choices[0].message.content or "")
        return answers

    results = await asyncio.gather(*(one_client(number) for number in range(20)))
    answers = [answer for answers in results for answer in answers]
    assert len(answers) == 200 and all(answers)
    assert len(provider.requests) == 200
    rows = await proxy.settled_rows("prompt_tokens IS NOT NULL", 200)
    assert len(rows) == 200
    assert len(await proxy.rows()) == 200
    assert len({row["prompt"] for row in rows}) == 200  # each request logged once


# -- start -----------------------------------------------------------------------------------------

NO_PROVIDER_ENV = Secrets(groq_api_key=None, openai_api_key=None, openai_base_url=None)


async def test_provider_needs_a_key_or_a_base_url(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"set OPENAI_API_KEY .* or proxy\.base_url"):
        Provider.from_settings(ProxySettings(), NO_PROVIDER_ENV)
    with pytest.raises(ConfigError, match="set MY_PROVIDER_KEY"):
        Provider.from_settings(ProxySettings(api_key_env="MY_PROVIDER_KEY"), NO_PROVIDER_ENV)
    # A keyless local server, or a key alone (OpenAI itself), is a provider.
    local = Provider.from_settings(ProxySettings(base_url="http://127.0.0.1:9/v1"), NO_PROVIDER_ENV)
    await local.close()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    keyed = Provider.from_settings(ProxySettings(), NO_PROVIDER_ENV)
    await keyed.close()


def test_proxy_without_a_provider_stops_with_one_line(tmp_path, monkeypatch, capsys):
    for variable in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(variable, raising=False)

    async def must_not_open(*args, **kwargs):
        raise AssertionError("the router was opened for a proxy with no provider")

    monkeypatch.setattr("bot.cli.proxy.open_router", must_not_open)
    monkeypatch.setattr("router.proxy.server.open_router", must_not_open)
    assert main(["proxy", "--port", "0", "--db", str(tmp_path / "x.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: the proxy has no provider: set OPENAI_API_KEY")
    assert "\n" not in err
