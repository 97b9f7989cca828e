"""The proxy's edges over real HTTP: malformed bodies (400s that keep the connection), OpenAI's
404/405/413 shapes, CORS, /healthz and GET /v1/models/{id}, allowed models per key, and the
Prometheus /metrics."""

from __future__ import annotations

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.cli import main
from tests.proxy_helpers import CHEAP, CLIENT_KEY, GREETING, running_proxy, user

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
JSON_AUTH = AUTH | {"Content-Type": "application/json"}
ORIGIN = "https://family.example"


def body_with(extra: str) -> bytes:
    """A chat request whose JSON text ends with `extra` (written by hand: json.dumps would not
    write NaN or a lone surrogate the way a client might)."""
    return b'{"model": "cheap", "messages": [{"role": "user", "content": "hi"}]' + extra.encode()


def local_port(response: httpx.Response) -> int | None:
    """The client side's port of the connection that carried `response` (None: closed)."""
    try:
        return response.extensions["network_stream"].get_extra_info("client_addr")[1]
    except OSError:
        return None


# -- malformed bodies: a 400 that names the problem, and the connection stays -------------------

BAD_BODIES = [
    (body_with(', "temperature": NaN}'), 400, "NaN is not valid JSON"),
    (body_with(', "temperature": -Infinity}'), 400, "-Infinity is not valid JSON"),
    (body_with(', "temperature": 1e999}'), 400, "out of range"),
    (body_with(', "max_tokens": ' + "9" * 5000 + "}"), 400, "digits"),
    (body_with(', "x": ' + "[" * 100_000 + "]" * 100_000 + "}"), 400, "nested deeper"),
    (body_with(', "x": ' + "[" * 100 + "]" * 100 + "}"), 400, "nested deeper"),
    (b'{"model": "cheap", "messages": [{"role": "user", "content": "\xff"}]}', 400, "not valid"),
    # UTF-16, with a lone surrogate the UTF-8 check of the raw bytes would not see
    (
        '{"model": "cheap", "messages": [{"role": "user", "content": "hi \\ud800"}]}'.encode(
            "utf-16"
        ),
        400,
        "not valid",
    ),
    (body_with(', "x": "' + "y" * 300_000 + '"}'), 413, "limit of 262144 bytes"),
]


async def test_malformed_bodies_get_400_and_the_connection_keeps_serving(tmp_path, provider):
    async with (
        running_proxy(tmp_path / "bad.db", None, provider.base_url, max_body_bytes=262_144) as p,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as http,
    ):
        url = p.url + "/chat/completions"
        first = await http.post(
            url, json={"model": "cheap", "messages": user(GREETING)}, headers=AUTH
        )
        refused = [
            await http.post(url, content=body, headers=JSON_AUTH) for body, _, _ in BAD_BODIES
        ]
        valid = [
            await http.post(
                url, json={"model": "cheap", "messages": user(f"{GREETING} {n}")}, headers=AUTH
            )
            for n in range(30)
        ]
        ports = {local_port(r) for r in [first, *refused, *valid]}
        rows = await p.settled_rows("TRUE", 31)
    for response, (_, status, says) in zip(refused, BAD_BODIES, strict=True):
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert says in error["message"]
    assert [response.status_code for response in valid] == [200] * 30
    # One connection carried everything: no answer closed it.
    assert len(ports) == 1 and None not in ports
    assert len(provider.requests) == 31
    assert {row["outcome"] for row in rows} == {"completed"}


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\u0000"])
async def test_a_lone_surrogate_or_nul_is_routed_with_a_replacement_character(
    seeded_db, embedder, provider, escape
):
    # Valid JSON, but no UTF-8 encoder (the embedder's tokenizer, SQLite, the provider's
    # client) takes a lone surrogate, and no PostgreSQL text column a NUL: each becomes U+FFFD,
    # as a UTF-8 decoder would make it.
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "hi %s there"}]}' % escape
    async with running_proxy(seeded_db, embedder, provider.base_url) as proxy:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                proxy.url + "/chat/completions", content=raw, headers=JSON_AUTH
            )
            pair = await http.post(
                proxy.url + "/chat/completions",
                content=b'{"model": "auto", "messages": [{"role": "user", "content": '
                b'"ok \\ud83d\\ude00"}]}',
                headers=JSON_AUTH,
            )
        rows = await proxy.settled_rows("TRUE", 2)
    assert (response.status_code, pair.status_code) == (200, 200)
    assert response.headers["x-crabbot-source"] in ("knn", "fixed", "prior")
    assert provider.requests[0].body["messages"][0]["content"] == "hi \ufffd there"
    assert provider.requests[1].body["messages"][0]["content"] == "ok 😀"
    assert rows[0]["prompt"] == "hi \ufffd there" and rows[0]["outcome"] == "completed"


@pytest.mark.parametrize(
    "content",
    ["\u200b", "\u0007", [{"type": "text", "text": ""}, {"type": "text", "text": "\u200b"}]],
)
async def test_auto_with_nothing_readable_is_answered_on_the_default_tier(plain, provider, content):
    """A last message of a zero-width space, a control character or blank parts (which
    str.strip keeps) is no text to route: the default tier answers it, as an empty one."""
    body = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    async with httpx.AsyncClient() as http:
        response = await http.post(plain.url + "/chat/completions", json=body, headers=AUTH)
        rows = await plain.settled_rows("TRUE", 1)
    assert response.status_code == 200, response.text
    default = plain.config.routing.default_tier
    assert response.headers["x-crabbot-tier"] == default and len(provider.requests) == 1
    assert rows[0]["outcome"] == "completed"
    assert not plain.router.counters["proxy_failures"]


# -- OpenAI's error shapes for paths, methods and sizes ------------------------------------------


async def test_unknown_path_and_wrong_method_answer_like_openai(plain):
    root = plain.url.removesuffix("/v1")
    async with httpx.AsyncClient() as http:
        unknown = await http.post(root + "/v1/x", json={}, headers=AUTH)
        wrong_method = await http.get(plain.url + "/chat/completions", headers=AUTH)
    assert unknown.status_code == 404
    assert unknown.json() == {
        "error": {
            "message": "Invalid URL (POST /v1/x)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["message"] == (
        "Invalid method for URL (GET /v1/chat/completions)"
    )
    assert wrong_method.headers["allow"] == "POST"


async def test_oversized_body_gets_413_through_the_sdk(plain, provider):
    async with plain.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="cheap", messages=user("x" * 5000))
    assert caught.value.status_code == 413
    assert "limit of 4096 bytes" in caught.value.message
    assert provider.requests == []


# -- CORS ----------------------------------------------------------------------------------------

PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


async def test_cors_is_off_by_default(plain):
    async with httpx.AsyncClient() as http:
        preflight = await http.options(plain.url + "/chat/completions", headers=PREFLIGHT)
        answer = await http.get(plain.url + "/models", headers=AUTH | {"Origin": ORIGIN})
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers


async def test_cors_origins_are_allowed_and_preflight_answered(tmp_path, provider):
    async with (
        running_proxy(
            tmp_path / "cors.db", None, provider.base_url, cors_origins=[ORIGIN]
        ) as proxy,
        httpx.AsyncClient() as http,
    ):
        preflight = await http.options(proxy.url + "/chat/completions", headers=PREFLIGHT)
        other = await http.options(
            proxy.url + "/chat/completions", headers=PREFLIGHT | {"Origin": "https://x.example"}
        )
        answer = await http.post(
            proxy.url + "/chat/completions",
            json={"model": "cheap", "messages": user(GREETING)},
            headers=AUTH | {"Origin": ORIGIN},
        )
        refused = await http.post(
            proxy.url + "/chat/completions",
            json={"model": "cheap", "messages": user(GREETING)},
            headers={"Origin": ORIGIN},
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "X-Crabbot-Tier" in answer.headers["access-control-expose-headers"]
    # A refusal carries the header too, so the page can read why.
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN


# -- /healthz and GET /v1/models/{id} ------------------------------------------------------------


async def test_healthz_says_more_only_with_a_client_key(plain):
    health = plain.url.removesuffix("/v1") + "/healthz"
    async with httpx.AsyncClient() as http:
        anyone = await http.get(health)
        wrong = await http.get(health, headers={"Authorization": "Bearer wrong"})
        keyed = await http.get(health, headers=AUTH)
    assert anyone.json() == wrong.json() == {"status": "ok"}
    assert keyed.json() == {"status": "ok", "mode": "live", "pool_size": 0}


async def test_retrieve_a_model_by_id(plain):
    async with plain.client() as client:
        found = [(await client.models.retrieve(name)).id for name in ("auto", "cheap", CHEAP)]
        # A model outside the tiers is the provider's to answer for.
        theirs = await client.models.retrieve("provider-llama")
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve("llama-3.3-70b-versatile")
    assert found == ["auto", "cheap", CHEAP]
    assert (theirs.id, theirs.owned_by) == ("provider-llama", "p")
    assert caught.value.code == "model_not_found"
    assert "`llama-3.3-70b-versatile` does not exist" in caught.value.message
    async with httpx.AsyncClient() as http:
        slashed = await http.get(plain.url + "/models/openai/gpt-x", headers=AUTH)
        no_key = await http.get(plain.url + "/models/auto")
    assert slashed.status_code == 404 and slashed.json()["error"]["code"] == "model_not_found"
    assert no_key.status_code == 401


# -- allowed models --------------------------------------------------------------------------------


async def test_allowed_models_per_key_label(tmp_path, provider):
    keys = ("kids:kids-key", "grown-ups:adults-key")
    async with running_proxy(
        tmp_path / "allowed.db",
        None,
        provider.base_url,
        env_keys=keys,
        allowed_models=["cheap"],
        allowed_models_by_key={"kids": ["auto"], "grown-ups": ["*"]},
    ) as proxy:
        outcomes: dict[str, dict[str, int | str]] = {}
        for key in (CLIENT_KEY, "kids-key", "adults-key"):
            async with proxy.client(key=key) as client:
                for model in ("auto", "cheap", CHEAP, "strong", "llama-3.3-70b-versatile"):
                    try:
                        await client.chat.completions.create(model=model, messages=user(GREETING))
                        outcomes.setdefault(key, {})[model] = 200
                    except openai.PermissionDeniedError as error:
                        outcomes.setdefault(key, {})[model] = error.status_code
                        assert error.body["message"] == (
                            f"The model `{model}` is not allowed for this key."
                        )
                        assert error.code == "model_not_allowed"
                listed = [model.id async for model in client.models.list()]
                outcomes[key]["listed"] = ",".join(listed)
        # The embeddings endpoint keeps the same rule.
        async with proxy.client(key="kids-key") as client:
            with pytest.raises(openai.PermissionDeniedError):
                await client.embeddings.create(model="text-embedding-3-small", input="hi")
        rows = await proxy.settled_rows("TRUE", 8)
    m = ("auto", "cheap", CHEAP, "strong", "llama-3.3-70b-versatile")
    assert [outcomes[CLIENT_KEY][name] for name in m] == [403, 200, 200, 403, 403]
    assert [outcomes["kids-key"][name] for name in m] == [200, 403, 403, 403, 403]
    assert [outcomes["adults-key"][name] for name in m] == [200] * 5
    assert outcomes[CLIENT_KEY]["listed"] == f"cheap,{CHEAP}"
    assert outcomes["kids-key"]["listed"] == "auto"
    # Refused before any provider call or routing-log row; counted.
    assert len(provider.requests) == len(rows) == 8
    assert proxy.router.counters["models_refused"] == 8


def test_an_allowed_models_rule_for_a_label_no_key_has_stops_the_start(
    tmp_path, monkeypatch, capsys
):
    config = tmp_path / "crabbot.toml"
    config.write_text(
        '[proxy]\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[proxy.allowed_models_by_key]\nkids = ["auto"]\n'
    )
    monkeypatch.setenv("CRABBOT_PROXY_KEYS", "kidz:some-key")

    async def must_not_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("the router was opened for a proxy that cannot start")

    monkeypatch.setattr("bot.cli.proxy.open_router", must_not_open)
    monkeypatch.setattr("router.proxy.server.open_router", must_not_open)
    assert main(["proxy", "--config", str(config), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no client key has the label 'kids'" in err
    assert "some-key" not in err and "\n" not in err


# -- /metrics -------------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_requests_decisions_fallbacks_and_provider_errors(
    tmp_path, provider, refused_port
):
    dead = f"http://127.0.0.1:{refused_port}"  # the categorizer cannot be reached: fallbacks
    async with (
        running_proxy(
            tmp_path / "metrics.db",
            None,
            provider.base_url,
            sections={"categorizer": {"enabled": True, "base_url": dead}},
            groq_api_key="gsk-test",
        ) as proxy,
        running_proxy(tmp_path / "other.db", None, provider.base_url) as other,
    ):
        async with proxy.client() as client:
            for model in ("auto", "auto", "cheap", "some-provider-model"):
                await client.chat.completions.create(model=model, messages=user(GREETING))
            stream = await client.chat.completions.create(
                model="medium", messages=user(GREETING), stream=True
            )
            assert [chunk async for chunk in stream]
            # A stream's provider time is taken when its relay ends, a moment after the client
            # has read the last event.
            await proxy.gateway.settled()
            provider.fail_status = 500
            with pytest.raises(openai.APIStatusError):
                await client.chat.completions.create(model="strong", messages=user(GREETING))
        async with httpx.AsyncClient() as http:
            await http.get(proxy.url + "/nowhere")
            no_key = await http.get(proxy.url.removesuffix("/v1") + "/metrics")
            scraped = await http.get(proxy.url.removesuffix("/v1") + "/metrics", headers=AUTH)
            untouched = await http.get(other.url.removesuffix("/v1") + "/metrics", headers=AUTH)
    assert no_key.status_code == 401
    assert scraped.headers["content-type"].startswith("text/plain")
    got = samples(scraped.text)
    chat = (("endpoint", "/v1/chat/completions"),)
    # The stream is counted once its last byte is sent: before the requests that followed it.
    assert got[("crabbot_proxy_requests_total", (*chat, ("status", "200")))] == 5
    assert got[("crabbot_proxy_requests_total", (*chat, ("status", "502")))] == 1
    assert (
        got[("crabbot_proxy_requests_total", (("endpoint", "unmatched"), ("status", "404")))] == 1
    )
    assert got[("crabbot_proxy_request_seconds_count", chat)] == 6
    decisions = "crabbot_routing_decisions_total"
    assert got[(decisions, (("source", "fallback"), ("tier", "medium")))] == 2
    assert got[(decisions, (("source", "alias"), ("tier", "cheap")))] == 1
    assert got[(decisions, (("source", "passthrough"), ("tier", "none")))] == 1
    assert got[(decisions, (("source", "alias"), ("tier", "strong")))] == 1
    assert got[(decisions, (("source", "alias"), ("tier", "medium")))] == 1
    reason = (("reason", "categorizer: connection failed"),)
    assert got[("crabbot_routing_fallbacks_total", reason)] == 2
    assert got[("crabbot_routing_seconds_count", ())] == 2
    assert got[("crabbot_provider_errors_total", (("status", "502"),))] == 1
    assert got[("crabbot_provider_seconds_count", (("stream", "false"),))] == 5
    assert got[("crabbot_provider_seconds_count", (("stream", "true"),))] == 1
    assert got[("crabbot_router_upstream_errors_total", ())] == 1
    assert got[("crabbot_router_fallbacks_total", ())] == 2
    assert got[("crabbot_router_categorizer_errors_total", ())] == 2
    assert got[("crabbot_router_log_write_errors_total", ())] == 0
    assert ("crabbot_routing_log_queue_depth", ()) in got
    # Each app has its own registry: the other proxy counted nothing of this.
    other_got = samples(untouched.text)
    assert ("crabbot_proxy_requests_total", (*chat, ("status", "200"))) not in other_got
    assert other_got[("crabbot_router_upstream_errors_total", ())] == 0


async def test_metrics_are_open_when_the_proxy_has_no_keys(tmp_path, provider):
    async with (
        running_proxy(tmp_path / "open.db", None, provider.base_url, client_keys=[]) as p,
        httpx.AsyncClient() as http,
    ):
        scraped = await http.get(p.url.removesuffix("/v1") + "/metrics")
    assert scraped.status_code == 200
    assert samples(scraped.text)[("crabbot_routing_log_queue_depth", ())] == 0
