"""The proxy's guards over real HTTP: each client's session keys in a namespace of its own, model
names that cannot go in a header, Host and Origin on a keyless proxy, a provider's 2xx echo of
its key, and a failure logged in one line."""

from __future__ import annotations

import json
import logging

import httpx

from router.proxy.access import ClientKey
from tests.proxy_helpers import CLIENT_KEY, CODING, GREETING, PROVIDER_KEY, running_proxy, user

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
        # The same two turns in a conversation nobody else touched: what "why?" should be.
        await router.route(GREETING, conv_key="telegram:-2002")
        untouched = await router.route("why?", conv_key="telegram:-2002")
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
    assert (family_next.tier, family_next.category) == (untouched.tier, untouched.category)
    assert family_next.tier != "strong"
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
        rows = await proxy.settled_rows("TRUE", 4)
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


# -- point 5: model names that cannot go in a header ---------------------------------------------

BAD_NAMES = ["模型", "cheap\r\nX-Evil: 1", "cheap\nx", "cheap\x00", "ÿĀ", "tab\there", "del\x7f"]


def _port(response: httpx.Response) -> int:
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


async def test_a_model_name_that_cannot_go_in_a_header_is_a_400_before_any_provider_call(
    tmp_path, provider
):
    async with (
        running_proxy(tmp_path / "names.db", None, provider.base_url) as proxy,
        httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1), headers=_auth(CLIENT_KEY)
        ) as http,
    ):
        answers = []
        for name in BAD_NAMES:
            for path, body in (
                ("/chat/completions", {"model": name, "messages": user(GREETING)}),
                ("/embeddings", {"model": name, "input": "hello"}),
                ("/responses", {"model": name, "input": "hello"}),
            ):
                answers.append(await http.post(proxy.url + path, json=body))
        after = await http.post(
            proxy.url + "/chat/completions", json={"model": "cheap", "messages": user(GREETING)}
        )
        ports = {_port(answer) for answer in [*answers, after]}
        rows = await proxy.settled_rows("TRUE", 1)
    assert [answer.status_code for answer in answers] == [400] * len(answers), [
        answer.text for answer in answers
    ]
    assert {answer.json()["error"]["param"] for answer in answers} == {"model"}
    assert after.status_code == 200
    # No provider call but the last one, nothing billed, and the connection kept throughout.
    assert len(provider.requests) == 1
    assert [row["outcome"] for row in rows] == ["completed"]
    assert len(ports) == 1


def test_routing_headers_are_always_header_safe():
    from router.proxy.gateway import header_safe

    assert header_safe("gpt-4.1 (mini)") == "gpt-4.1 (mini)"
    assert header_safe("模型") == "%E6%A8%A1%E5%9E%8B"
    assert header_safe("a\r\nb\x00") == "a%0D%0Ab%00"


# -- point 5: a provider's 2xx answer that echoes a key ------------------------------------------


async def test_a_2xx_answer_that_echoes_a_key_is_scrubbed(tmp_path, provider):
    echo = f"you sent Bearer {PROVIDER_KEY}; the client sent {CLIENT_KEY}"
    answer = {
        "id": "x",
        "object": "chat.completion",
        "model": "gpt-4.1-nano",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": echo}}],
    }
    async with (
        running_proxy(tmp_path / "echo.db", None, provider.base_url) as proxy,
        httpx.AsyncClient(headers=_auth(CLIENT_KEY)) as http,
    ):
        provider.plain_answer = (json.dumps(answer).encode(), "application/json")
        plain = await http.post(
            proxy.url + "/chat/completions", json={"model": "cheap", "messages": user(GREETING)}
        )
        provider.plain_answer = (f"data: {json.dumps(answer)}\n\n".encode(), "text/event-stream")
        streamed = await http.post(
            proxy.url + "/chat/completions",
            json={"model": "cheap", "messages": user(GREETING), "stream": True},
        )
    assert (plain.status_code, streamed.status_code) == (200, 200)
    for text in (plain.text, streamed.text):
        assert PROVIDER_KEY not in text and CLIENT_KEY not in text
        assert "you sent Bearer [redacted]; the client sent [redacted]" in text


# -- point 10: an unexpected failure is one line, counted ----------------------------------------


async def test_an_unexpected_failure_is_one_line_counted_and_keeps_the_connection(
    tmp_path, provider, caplog
):
    server_log = logging.getLogger("uvicorn.error")
    server_log.addHandler(caplog.handler)
    try:
        async with (
            running_proxy(tmp_path / "boom.db", None, provider.base_url) as proxy,
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=1), headers=_auth(CLIENT_KEY)
            ) as http,
        ):
            body = {"model": "cheap", "messages": user(GREETING)}

            def broken(decision: object) -> None:
                raise RuntimeError("a bug in the proxy")

            proxy.gateway.metrics.decided = broken  # type: ignore[method-assign]
            caplog.clear()
            with caplog.at_level(logging.INFO):
                failed = [await http.post(proxy.url + "/chat/completions", json=body) for _ in "ab"]
            del proxy.gateway.metrics.decided
            after = await http.post(proxy.url + "/chat/completions", json=body)
            counted = proxy.router.counters["proxy_failures"]
            ports = {_port(answer) for answer in [*failed, after]}
    finally:
        server_log.removeHandler(caplog.handler)
    assert [answer.status_code for answer in failed] == [500, 500]
    assert failed[0].json()["error"]["type"] == "server_error"
    assert after.status_code == 200
    assert len(ports) == 1
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 2, [record.getMessage() for record in errors]
    for record in errors:
        assert record.exc_info is None
        assert "RuntimeError: a bug in the proxy at test_proxy_guard.py" in record.getMessage()
        assert "\n" not in record.getMessage()
    assert counted == 2


# -- point 5: a keyless proxy and web pages ------------------------------------------------------

EVIL = "https://evil.example"


async def test_a_keyless_proxy_refuses_other_hosts_and_origins(tmp_path, provider):
    body = json.dumps({"model": "cheap", "messages": user(GREETING)})
    async with (
        running_proxy(
            tmp_path / "open.db",
            None,
            provider.base_url,
            client_keys=[],
            cors_origins=["https://family.example"],
            allowed_hosts=["crabbot.lan"],
        ) as proxy,
        httpx.AsyncClient() as http,
    ):
        url = proxy.url + "/chat/completions"
        port = url.split(":")[2].split("/")[0]

        async def post(**headers: str) -> httpx.Response:
            return await http.post(
                url, content=body, headers={"Content-Type": "text/plain"} | headers
            )

        # A page on evil.example posting text/plain (no preflight), directly or rebound.
        direct = await post(Origin=EVIL)
        rebound = await post(Origin=f"http://evil.example:{port}", Host=f"evil.example:{port}")
        null = await post(Origin="null")
        served = [
            await post(),  # no browser: no Origin
            await post(Host=f"localhost:{port}"),
            await post(Host=f"[::1]:{port}"),
            await post(Host=f"crabbot.lan:{port}"),
            await post(Origin="https://family.example"),
            await post(Origin=f"http://localhost:{port}", Host=f"localhost:{port}"),
        ]
        counters = dict(proxy.router.counters)
    assert direct.status_code == 403 and direct.json()["error"]["code"] == "origin_not_allowed"
    assert rebound.status_code == 400 and rebound.json()["error"]["code"] == "host_not_allowed"
    assert null.status_code == 403
    assert [answer.status_code for answer in served] == [200] * len(served)
    assert len(provider.requests) == len(served)
    assert (counters["origins_refused"], counters["hosts_refused"]) == (2, 1)


async def test_a_proxy_with_keys_leaves_host_and_origin_to_the_key(tmp_path, provider):
    async with (
        running_proxy(tmp_path / "keyed.db", None, provider.base_url) as proxy,
        httpx.AsyncClient(headers=_auth(CLIENT_KEY)) as http,
    ):
        answer = await http.post(
            proxy.url + "/chat/completions",
            json={"model": "cheap", "messages": user(GREETING)},
            headers={"Origin": EVIL, "Host": "crabbot.example"},
        )
        keyless = await http.post(
            proxy.url + "/chat/completions",
            json={"model": "cheap", "messages": user(GREETING)},
            headers={"Origin": EVIL, "Authorization": ""},
        )
    assert (answer.status_code, keyless.status_code) == (200, 401)
