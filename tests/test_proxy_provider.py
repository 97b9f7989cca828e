"""The proxy's provider call over real HTTP: secrets scrubbed from relayed errors, rate-limit
headers and retries, time limits against a provider that goes silent, and answers that are not
what a stream promised. The openai SDK is the client, a fake provider on 127.0.0.1 the upstream."""

from __future__ import annotations

import logging

import openai
import pytest

from router.config import ProxySettings
from router.proxy.redact import Redactor
from tests.fakes.openai_api import EMBEDDING_TOKENS_PER_INPUT, answer_from, stream_pieces
from tests.proxy_helpers import (
    CHEAP,
    CLIENT_KEY,
    GREETING,
    PROVIDER_KEY,
    RunningProxy,
    running_proxy,
    user,
)

LEAKED_TOKEN = "sk-live-0123456789abcdef"


async def only_row(proxy: RunningProxy) -> dict[str, object]:
    (row,) = await proxy.settled_rows("TRUE", 1)
    return row


# -- secrets


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("entry", [CLIENT_KEY, f"kids:{CLIENT_KEY}"])
async def test_provider_error_echoing_secrets_reaches_no_one(
    tmp_path, provider, caplog, stream, entry
):
    """A provider that repeats the request's Authorization header and text in its error: the
    client, the warning log and the routing log get the message with every secret replaced; a
    labelled client key ("kids:<key>") as its key."""
    provider.fail_status = 400
    provider.echo_secrets = True
    text = f"my key is {CLIENT_KEY}, my other one {LEAKED_TOKEN}"
    caplog.set_level(logging.WARNING)
    keys = [entry]
    async with running_proxy(tmp_path / "p.db", None, provider.base_url, client_keys=keys) as proxy:
        async with proxy.client() as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(
                    model="cheap", messages=user(text), stream=stream
                )
        row = await only_row(proxy)
    message = caught.value.body["message"]
    assert message.startswith("bad request; you sent Bearer [redacted] and 'my key is [redacted]")
    assert provider.requests[0].authorization == f"Bearer {PROVIDER_KEY}"  # it was sent...
    for place in (message, caught.value.response.text):  # ...and went no further
        assert "[redacted]" in place
        for secret in (PROVIDER_KEY, CLIENT_KEY, LEAKED_TOKEN):
            assert secret not in place
    # The provider's words may quote the family's: the log and the routing log keep only what
    # kind of error it was (privacy.store_prompts and erasure never reach an error column).
    assert row["error"] == "provider: HTTP 400 from the provider: server_error, fake_failure"
    assert "HTTP 400" in caplog.text
    for secret in (PROVIDER_KEY, CLIENT_KEY, LEAKED_TOKEN, "my key is"):
        assert secret not in caplog.text
    assert row["outcome"] == "provider_error"


def test_a_short_placeholder_key_is_not_scrubbed_out_of_answers():
    """A local server's key "ollama" is no secret: an answer that says the word keeps it; an
    error that holds it is still scrubbed, and a real key is scrubbed from answers too."""
    redact = Redactor(["ollama", PROVIDER_KEY])
    answer = f"install ollama, then run `ollama pull llama3`; not {PROVIDER_KEY}".encode()
    assert (
        redact.known_in(answer) == b"install ollama, then run `ollama pull llama3`; not [redacted]"
    )
    assert redact("bad key ollama") == "bad key [redacted]"


def test_redactor_replaces_keys_and_token_shapes_only():
    redact = Redactor(["family-key", None, ""])
    assert redact("key family-key; auth: Bearer abc.DEF-123, key sk-proj-AbC_123456") == (
        "key [redacted]; auth: Bearer [redacted], key [redacted]"
    )
    assert redact("gsk_abcdefghijkl wrong") == "[redacted] wrong"
    ordinary = "a risk-free task-skip; ask-me; the bearer of bad news"
    assert redact(ordinary) == ordinary


# -- rate limits and retries

RATE_LIMITED = {
    "Retry-After": "7",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-reset-requests": "7s",
}


async def test_429_reaches_the_client_with_its_headers_after_one_provider_call(tmp_path, provider):
    """With the default settings each client attempt is one provider call (the SDK retries on
    its own), and the client gets what it needs to back off."""
    provider.fail_status = 429
    provider.fail_headers = RATE_LIMITED
    async with running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy:
        async with proxy.client() as client:
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(model="strong", messages=user(GREETING))
        row = await only_row(proxy)
        assert proxy.router.counters["upstream_errors"] == 1
    assert len(provider.requests) == 1
    headers = caught.value.response.headers
    for name, value in RATE_LIMITED.items():
        assert headers[name] == value
    assert headers["x-crabbot-tier"] == "strong"
    assert row["outcome"] == "provider_error"


@pytest.mark.parametrize(("status", "calls"), [(503, 3), (429, 3), (400, 1), (401, 1)])
async def test_configured_retries_only_for_429_and_5xx(tmp_path, provider, status, calls):
    provider.fail_status, provider.fail_count = status, 2
    provider.fail_headers = {"Retry-After": "0"}
    async with running_proxy(tmp_path / "p.db", None, provider.base_url, max_retries=2) as proxy:
        async with proxy.client() as client:
            if calls == 3:
                answer = await client.chat.completions.create(
                    model="cheap", messages=user(GREETING)
                )
                assert answer.choices[0].message.content
            else:
                with pytest.raises(openai.APIStatusError):
                    await client.chat.completions.create(model="cheap", messages=user(GREETING))
        row = await only_row(proxy)
    assert len(provider.requests) == calls
    assert row["outcome"] == ("completed" if calls == 3 else "provider_error")


async def test_a_429_asking_for_longer_than_the_cap_is_relayed_without_retrying(tmp_path, provider):
    provider.fail_status = 429
    provider.fail_headers = RATE_LIMITED | {"Retry-After": "30"}
    async with (
        running_proxy(
            tmp_path / "p.db", None, provider.base_url, max_retries=3, max_retry_wait_s=5
        ) as proxy,
        proxy.client() as client,
    ):
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="cheap", messages=user(GREETING))
    assert len(provider.requests) == 1
    assert caught.value.response.headers["retry-after"] == "30"


# -- time limits


@pytest.mark.parametrize("stream", [False, True])
async def test_silent_provider_gets_a_504_at_the_first_byte_timeout(tmp_path, provider, stream):
    provider.stall_after = -1  # not even a status line
    async with running_proxy(
        tmp_path / "p.db", None, provider.base_url, first_byte_timeout_s=0.3
    ) as proxy:
        async with proxy.client() as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model="cheap", messages=user(GREETING), stream=stream
                )
        row = await only_row(proxy)
        assert proxy.router.counters["upstream_errors"] == 1
    assert caught.value.status_code == 504
    assert (caught.value.type, caught.value.code) == ("upstream_error", "provider_timeout")
    assert caught.value.body["message"] == "the provider did not answer in 0.3 s"
    assert row["error"] == "provider: the provider did not answer in 0.3 s"
    assert row["outcome"] == "provider_error"


async def test_stream_that_stalls_midway_ends_with_an_error_event(tmp_path, provider):
    provider.stall_after = 2
    pieces: list[str] = []
    async with running_proxy(
        tmp_path / "p.db", None, provider.base_url, first_byte_timeout_s=0.3
    ) as proxy:
        async with proxy.client() as client:
            stream = await client.chat.completions.create(
                model="cheap", messages=user(GREETING), stream=True
            )
            with pytest.raises(openai.APIError) as caught:
                async for chunk in stream:
                    pieces.append(chunk.choices[0].delta.content or "")
        row = await only_row(proxy)
    assert "".join(pieces) == "".join(stream_pieces(answer_from(CHEAP))[:2])
    assert "stalled" in caught.value.message
    assert row["outcome"] == "provider_error"
    assert row["error"] == "provider: the provider's stream stalled: nothing for 0.3 s"


def test_older_timeout_key_still_sets_the_first_byte_timeout():
    assert ProxySettings(timeout_s=12).first_byte_timeout_s == 12
    defaults = ProxySettings()
    assert defaults.first_byte_timeout_s < 120 and defaults.max_retries == 0


# -- answers that are not what they say


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        ((b"<!DOCTYPE html>\n<html><body>Bad gateway</body></html>", "text/html"), "text/html"),
        ((b"", "text/event-stream"), "ended before its first event"),
    ],
)
async def test_streamed_200_that_is_no_event_stream_is_a_502(tmp_path, provider, answer, says):
    provider.plain_answer = answer
    async with running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy:
        async with proxy.client() as client:
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(
                    model="cheap", messages=user(GREETING), stream=True
                )
        row = await only_row(proxy)
    assert caught.value.status_code == 502
    assert says in caught.value.message
    assert row["outcome"] == "provider_error" and says in str(row["error"])


# -- embeddings -----------------------------------------------------------------------------------


async def test_embeddings_pass_through_with_one_logged_row(tmp_path, provider):
    async with running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy:
        async with proxy.client() as client:
            raw = await client.embeddings.with_raw_response.create(
                model="text-embedding-3-small", input=["早安", "good night"]
            )
        (row,) = await proxy.settled_rows("source = 'passthrough'", 1)
    answer = raw.parse()
    assert [item.embedding for item in answer.data] == [[0.0, 0.5, -0.25], [1.0, 0.5, -0.25]]
    assert answer.usage.prompt_tokens == 2 * EMBEDDING_TOKENS_PER_INPUT
    assert raw.headers["x-crabbot-source"] == "passthrough"
    (seen,) = provider.requests
    assert (seen.model, seen.body["input"]) == ("text-embedding-3-small", ["早安", "good night"])
    assert seen.authorization == f"Bearer {PROVIDER_KEY}"
    assert (row["model"], row["outcome"], row["prompt"]) == (
        "text-embedding-3-small",
        "completed",
        "",
    )
    assert row["prompt_tokens"] == 2 * EMBEDDING_TOKENS_PER_INPUT


async def test_embeddings_provider_error_is_scrubbed_and_logged(tmp_path, provider):
    provider.fail_status, provider.echo_secrets = 400, True
    async with running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy:
        async with proxy.client() as client:
            with pytest.raises(openai.BadRequestError) as caught:
                await client.embeddings.create(model="text-embedding-3-small", input=LEAKED_TOKEN)
        row = await only_row(proxy)
    assert PROVIDER_KEY not in caught.value.response.text
    assert LEAKED_TOKEN not in caught.value.response.text
    assert row["outcome"] == "provider_error" and "HTTP 400" in str(row["error"])
    assert LEAKED_TOKEN not in str(row["error"])


async def test_embeddings_without_input_get_400_and_no_provider_call(tmp_path, provider):
    async with (
        running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy,
        proxy.client() as client,
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.embeddings.create(model="text-embedding-3-small", input=[])
    assert caught.value.param == "input"
    assert provider.requests == []
