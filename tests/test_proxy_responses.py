"""POST /v1/responses over real HTTP: the openai SDK's `client.responses.create` (streamed and
not) against the proxy, a fake provider speaking the Responses wire format behind it, and the
real bundled embedding model routing `auto`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

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
    RunningProxy,
    running_proxy,
)

LEAKED_TOKEN = "sk-live-0123456789abcdef"


@pytest.fixture
async def plain(tmp_path, provider) -> AsyncIterator[RunningProxy]:
    """A proxy whose router has no local signal, for requests that are not routed."""
    async with running_proxy(tmp_path / "plain.db", None, provider.base_url) as p:
        yield p


def said(role: str, text: str) -> dict[str, object]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


# -- model="auto" --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tier", "model"), [(CODING, "strong", STRONG), (GREETING, "cheap", CHEAP)]
)
async def test_responses_auto_routes_by_the_input_text(proxy, provider, text, tier, model):
    async with proxy.client() as client:
        raw = await client.responses.with_raw_response.create(
            model="auto", input=text, instructions="You are a helpful family assistant."
        )
    answer = raw.parse()
    assert provider.models == [model]
    assert provider.requests[0].body["instructions"] == "You are a helpful family assistant."
    assert provider.requests[0].authorization == f"Bearer {PROVIDER_KEY}"
    assert answer.model == model
    assert answer.output_text == answer_from(model)
    assert raw.headers["x-crabbot-tier"] == tier
    (row,) = await proxy.settled_rows("TRUE", 1)
    assert (row["tier"], row["model"], row["prompt"], row["outcome"]) == (
        tier,
        model,
        text,
        "completed",
    )
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert row["decision_id"] == raw.headers["x-crabbot-decision-id"]


@pytest.mark.parametrize(("text", "model"), [(CODING, STRONG), (GREETING, CHEAP)])
async def test_responses_auto_streams_every_event_and_logs_the_usage(proxy, provider, text, model):
    items = [{"role": "developer", "content": "Answer briefly."}, said("user", text)]
    async with proxy.client() as client:
        stream = await client.responses.create(model="auto", input=items, stream=True)
        events = [event async for event in stream]
    assert provider.models == [model]
    assert provider.requests[0].stream
    assert events[0].type == "response.created"
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert deltas == stream_pieces(answer_from(model))
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == COMPLETION_TOKENS
    (row,) = await proxy.settled_rows("TRUE", 1)
    assert (row["model"], row["prompt"], row["outcome"]) == (model, text, "completed")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)


async def test_responses_earlier_items_are_the_context_of_the_last_user_text(proxy, provider):
    """A vague follow-up after a coding exchange (tool call included) stays with the coding
    model; alone it does not."""
    items = [
        said("user", "寫一個 python 函數把兩個 list 合併去重"),
        said("assistant", "def merge(a, b): ..."),
        {"type": "function_call", "call_id": "c1", "name": "run", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        said("user", "為什麼"),
    ]
    async with proxy.client() as client:
        follow_up = await client.responses.with_raw_response.create(model="auto", input=items)
        alone = await client.responses.with_raw_response.create(model="auto", input="為什麼")
    assert follow_up.headers["x-crabbot-category"] == "coding"
    assert follow_up.headers["x-crabbot-tier"] == "strong"
    assert alone.headers["x-crabbot-category"] != "coding"
    assert provider.requests[0].body["input"] == items  # forwarded as sent
    rows = await proxy.settled_rows("TRUE", 2)
    assert [row["prompt"] for row in rows] == ["為什麼", "為什麼"]


@pytest.mark.parametrize("field", ["safety_identifier", "user"])
async def test_responses_in_a_keyed_group_the_end_user_gives_each_speaker_their_context(
    proxy, provider, field
):
    """The Responses API names no speaker in its items: its `safety_identifier` (or `user`
    beside a session header) does, so grandma's poem request does not decide kenji's "why?"."""
    turns = [
        ("kenji", CODING),
        ("grandma", "おじいちゃんの誕生日に短い詩を書いて"),
        ("kenji", "why?"),
    ]
    tiers = []
    async with proxy.client(default_headers={"X-Session-Key": "telegram:-100"}) as client:
        for who, text in turns:
            raw = await client.responses.with_raw_response.create(
                model="auto", input=text, extra_body={field: who}
            )
            tiers.append(raw.headers["x-crabbot-tier"])
    assert tiers == ["strong", "medium", "strong"]


async def test_responses_an_end_user_id_that_is_not_a_string_is_refused(proxy, provider):
    async with proxy.client() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(
                model="auto", input=CODING, extra_body={"safety_identifier": ["kenji"]}
            )
    assert "safety_identifier must be a string" in str(refused.value)
    assert provider.requests == []


async def test_responses_auto_without_user_text_gets_the_default_tier(proxy, provider):
    picture = {"type": "input_image", "image_url": "https://example.invalid/cat.png"}
    async with proxy.client() as client:
        raw = await client.responses.with_raw_response.create(
            model="auto", input=[{"role": "user", "content": [picture]}]
        )
    assert raw.parse().output_text
    assert raw.headers["x-crabbot-source"] == "fixed"
    (row,) = await proxy.settled_rows("TRUE", 1)
    assert row["outcome"] == "completed" and row["prompt_tokens"] == PROMPT_TOKENS


# -- named models --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "model", "source"),
    [("cheap", CHEAP, "alias"), ("strong", STRONG, "alias"), ("o4-mini", "o4-mini", "passthrough")],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_responses_named_models_are_forwarded_and_logged(
    plain, provider, asked, model, source, stream
):
    async with plain.client() as client:
        if stream:
            events = await client.responses.create(model=asked, input=GREETING, stream=True)
            text = "".join(
                [
                    event.delta
                    async for event in events
                    if event.type == "response.output_text.delta"
                ]
            )
        else:
            text = (await client.responses.create(model=asked, input=GREETING)).output_text
    assert text == answer_from(model)
    assert provider.models == [model]
    (row,) = await plain.settled_rows("TRUE", 1)
    assert (row["model"], row["source"], row["outcome"]) == (model, source, "completed")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_provider_error_is_relayed_in_openai_shape(plain, provider, stream):
    provider.fail_status, provider.echo_secrets = 400, True
    async with plain.client() as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.responses.create(model="cheap", input=f"key {LEAKED_TOKEN}", stream=stream)
    error = caught.value
    assert error.code == "fake_failure"
    assert error.body["message"].startswith("bad request; you sent Bearer [redacted]")
    assert LEAKED_TOKEN not in error.response.text and PROVIDER_KEY not in error.response.text
    (row,) = await plain.settled_rows("TRUE", 1)
    assert row["outcome"] == "provider_error" and "HTTP 400" in str(row["error"])
    assert "key " not in str(row["error"])  # the provider's words quoted the request


async def test_responses_stream_broken_off_ends_with_an_error_event_and_row(plain, provider):
    provider.cut_stream_after = 2
    deltas: list[str] = []
    errors: list[str] = []
    async with plain.client() as client:
        stream = await client.responses.create(model="cheap", input=GREETING, stream=True)
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "error":  # the Responses API's own error event, last
                errors.append(event.message)
    assert deltas == stream_pieces(answer_from(CHEAP))[:2]
    assert len(errors) == 1 and "broke off" in errors[0]
    (row,) = await plain.settled_rows("TRUE", 1)
    assert row["outcome"] == "provider_error" and "broke off" in str(row["error"])


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "auto", "input": 42}, "input"),
        ({"model": "auto", "input": ["hi"]}, "input[0]"),
        ({"model": "auto", "input": [{"role": "user", "content": 3}]}, "input[0]"),
        ({"model": "auto", "input": "hi", "stream": "yes"}, "stream"),
    ],
)
async def test_responses_bad_body_gets_400_naming_it_and_no_provider_call(
    plain, provider, body, param
):
    base = plain.url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with httpx.AsyncClient() as client:
        answers = [
            await client.post(f"{base}{path}", json=body, headers=headers)
            for path in ("/v1/responses", "/responses")
        ]
    for answer in answers:
        assert answer.status_code == 400
        assert answer.json()["error"]["param"] == param
    assert provider.requests == []
