"""The proxy's guards over real HTTP: each client's session keys in a namespace of its own, model
names that cannot go in a header, Host and Origin on a keyless proxy, a provider's 2xx echo of
its key, and a failure logged in one line."""

from __future__ import annotations

import httpx

from router.proxy.access import ClientKey
from tests.proxy_helpers import CLIENT_KEY, CODING, GREETING, running_proxy, user

FAMILY = "telegram:-1001"
KEYS = ("alice:key-of-alice", "mallory:key-of-mallory")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _ask(
    http: httpx.AsyncClient, url: str, text: str, session: str, key: str | None
) -> httpx.Response:
    headers = {"X-Session-Key": session} | (_auth(key) if key else {})
    body = {"model": "auto", "messages": user(text)}
    response = await http.post(url + "/chat/completions", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response


# -- point 3: conversations belong to their client -----------------------------------------------


async def test_a_client_can_neither_set_nor_read_the_family_groups_context(
    seeded_db, embedder, provider
):
    async with running_proxy(seeded_db, embedder, provider.base_url, env_keys=KEYS) as proxy:
        router = proxy.router
        await router.route(GREETING, conv_key=FAMILY)
        # Mallory tries to make the family's next vague turn strong ...
        await _ask_once(proxy.url, CODING, FAMILY, "key-of-mallory")
        family_next = await router.route("why?", conv_key=FAMILY)
        # ... and to read what the family's conversation was about.
        await router.route(CODING, conv_key="discord:77")
        async with httpx.AsyncClient() as http:
            read = await _ask(http, proxy.url, "why?", "discord:77", "key-of-mallory")
        rows = await proxy.settled_rows("conv_key LIKE 'proxy:%'", 2)
    # The family's "why?" still follows the family's own greeting, not Mallory's code.
    assert (family_next.tier, family_next.category) == ("cheap", "casual")
    assert read.headers["x-crabbot-source"] != "prior"
    assert [row["conv_key"] for row in rows] == [
        f"proxy:mallory:{FAMILY}",
        "proxy:mallory:discord:77",
    ]


async def _ask_once(url: str, text: str, session: str, key: str | None) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await _ask(http, url, text, session, key)


async def test_two_clients_with_one_session_key_have_two_conversations(
    seeded_db, embedder, provider
):
    async with running_proxy(seeded_db, embedder, provider.base_url, env_keys=KEYS) as proxy:
        async with httpx.AsyncClient() as http:
            await _ask(http, proxy.url, CODING, "shared", "key-of-alice")
            mallory = await _ask(http, proxy.url, "why?", "shared", "key-of-mallory")
            alice = await _ask(http, proxy.url, "why?", "shared", "key-of-alice")
            # A key with no label has a namespace of its own too (a fingerprint, not the key).
            unlabeled = await _ask(http, proxy.url, "why?", "shared", CLIENT_KEY)
        rows = await proxy.settled_rows("1", 4)
    assert mallory.headers["x-crabbot-source"] != "prior"
    assert unlabeled.headers["x-crabbot-source"] != "prior"
    assert (alice.headers["x-crabbot-source"], alice.headers["x-crabbot-tier"]) == (
        "prior",
        "strong",
    )
    fingerprint = ClientKey(CLIENT_KEY.encode(), None).namespace
    assert fingerprint.startswith("#") and CLIENT_KEY not in fingerprint
    assert [row["conv_key"] for row in rows] == [
        "proxy:alice:shared",
        "proxy:mallory:shared",
        "proxy:alice:shared",
        f"proxy:{fingerprint}:shared",
    ]


async def test_a_keyless_proxy_has_a_namespace_of_its_own(seeded_db, embedder, provider):
    async with running_proxy(seeded_db, embedder, provider.base_url, client_keys=[]) as proxy:
        await proxy.router.route(CODING, conv_key=FAMILY)
        response = await _ask_once(proxy.url, "why?", FAMILY, None)
        rows = await proxy.settled_rows("conv_key LIKE 'proxy:%'", 1)
    assert response.headers["x-crabbot-source"] != "prior"
    assert rows[0]["conv_key"] == f"proxy:-:{FAMILY}"
