"""Who speaks, by the X-Crabbot-Speaker header, over real HTTP with the openai SDK: the proxy keeps
a person's words under the key the header gives (chat completions and the Responses API), a
client without it is keyed by `name` or the end user as before, a blank or over-long one is
refused, and the header never reaches the provider."""

from __future__ import annotations

import json

import openai
import pytest

from router.proxy.access import ClientKey
from tests.proxy_helpers import CLIENT_KEY

GROUP = "telegram:-100"
MOM_KEY = "telegram:42"
NAMESPACE = ClientKey(CLIENT_KEY.encode(), None).namespace  # the client's key has no label


async def test_the_speaker_header_keys_the_words_and_never_reaches_the_provider(plain, provider):
    """Mom's words, by chat and by the Responses API, are kept under her key whatever her name;
    a request without the header is kept under its `name`, as before."""
    as_mom = {"X-Session-Key": GROUP, "X-Crabbot-Speaker": MOM_KEY}
    async with plain.client() as client:
        await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "dinner at 7?", "name": "Mom"}],
            extra_headers=as_mom,
        )
        await client.responses.create(
            model="auto",
            input="bring the cake",
            extra_body={"safety_identifier": "Mom"},
            extra_headers=as_mom,
        )
        await client.chat.completions.create(
            model="cheap",
            messages=[{"role": "user", "content": "who brings wine?", "name": "Mom"}],
            extra_headers=as_mom,
        )
        await client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "I will", "name": "Mom"}],
            extra_headers={"X-Session-Key": GROUP},
        )
    rows = await plain.settled_rows("TRUE", 4)
    assert [(row["prompt"], row["user_key"]) for row in rows] == [
        ("dinner at 7?", f"proxy:{NAMESPACE}:{MOM_KEY}"),
        ("bring the cake", f"proxy:{NAMESPACE}:{MOM_KEY}"),
        ("who brings wine?", f"proxy:{NAMESPACE}:{MOM_KEY}"),  # a named model keeps whose too
        ("I will", f"proxy:{NAMESPACE}:Mom"),
    ]
    assert len(provider.requests) == 4
    for seen in provider.requests:  # who she is stays at the proxy
        assert "x-crabbot-speaker" not in seen.headers
        assert MOM_KEY not in json.dumps(seen.body) + json.dumps(seen.headers)


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
@pytest.mark.parametrize("speaker", ["", "telegram:" + "4" * 248])
async def test_a_blank_or_over_long_speaker_header_gets_a_400_naming_it(
    plain, provider, endpoint, speaker
):
    headers = {"X-Crabbot-Speaker": speaker}
    async with plain.client() as client:
        with pytest.raises(openai.BadRequestError) as refused:
            if endpoint == "chat":
                await client.chat.completions.create(
                    model="auto",
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers=headers,
                )
            else:
                await client.responses.create(model="auto", input="hi", extra_headers=headers)
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["param"] == "X-Crabbot-Speaker"
    assert error["message"] == (
        "the X-Crabbot-Speaker header must be non-blank and at most 256 characters"
    )
    assert provider.requests == []
    assert await plain.rows() == []
