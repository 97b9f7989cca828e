"""The proxy's admin endpoints over real HTTP: the admin key (none set, missing, wrong), the mode
that /healthz reports and routing uses, the proxy's own stats, a conversation's context reset and a
person's erasure in the caller's namespace only, and the Host/Origin guard in front of them."""

from __future__ import annotations

import logging

import httpx

from tests.proxy_helpers import CLIENT_KEY, CODING, GREETING, running_proxy, user

ADMIN_KEY = "admin-key-for-tests-0123456789"
ADMIN = {"X-Crabbot-Admin-Key": ADMIN_KEY}
KEYS = ("alice:key-of-alice", "mallory:key-of-mallory")
FOLLOW_UP = "make it faster"  # after CODING, the context prior decides it (source prior)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _ask(
    http: httpx.AsyncClient, url: str, text: str, session: str, key: str = CLIENT_KEY
) -> httpx.Response:
    headers = {"X-Session-Key": session} | _auth(key)
    response = await http.post(
        url + "/chat/completions", json={"model": "auto", "messages": user(text)}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response


async def test_without_an_admin_key_the_admin_endpoints_answer_403_in_one_line(tmp_path, provider):
    async with running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as http:
            stats = await http.get("/admin/routing/stats", headers=ADMIN | _auth(CLIENT_KEY))
            mode = await http.post("/admin/routing/mode", json={"mode": "off"}, headers=ADMIN)
            # Mounted beside /v1 as well, like every endpoint.
            bare = await http.get(proxy.url.removesuffix("/v1") + "/admin/routing/stats")
        assert proxy.router.mode == "live"
    for response in (stats, mode, bare):
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "admin_key_not_set"
        assert "\n" not in error["message"] and "CRABBOT_PROXY_ADMIN_KEY" in error["message"]


async def test_the_admin_key_sets_the_mode_healthz_reports_and_routing_uses(
    tmp_path, provider, caplog
):
    caplog.set_level(logging.DEBUG)
    async with running_proxy(
        tmp_path / "p.db", None, provider.base_url, admin_key=ADMIN_KEY
    ) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as http:
            missing = await http.post("/admin/routing/mode", json={"mode": "off"})
            wrong = await http.post(
                "/admin/routing/mode",
                json={"mode": "off"},
                headers={"X-Crabbot-Admin-Key": CLIENT_KEY},  # a client key is no admin key
            )
            assert proxy.router.mode == "live"
            bad = await http.post("/admin/routing/mode", json={"mode": "fast"}, headers=ADMIN)
            changed = await http.post("/admin/routing/mode", json={"mode": "off"}, headers=ADMIN)
            health = await http.get(
                proxy.url.removesuffix("/v1") + "/healthz", headers=_auth(CLIENT_KEY)
            )
            routed = await _ask(http, proxy.url, CODING, "s1")
            again = await http.post("/admin/routing/mode", json={"mode": "off"}, headers=ADMIN)
        rows = await proxy.settled_rows("TRUE", 1)
        metrics_refused = proxy.router.counters["admin_refused"]
    assert [missing.status_code, wrong.status_code, bad.status_code] == [401, 401, 400]
    assert missing.json()["error"]["code"] == wrong.json()["error"]["code"] == "invalid_admin_key"
    assert metrics_refused == 2
    assert changed.status_code == 200 and changed.json() == {"mode": "off", "previous": "live"}
    assert again.json() == {"mode": "off", "previous": "off"}
    assert health.json()["mode"] == "off"
    # Routing uses it at once: the coding request went to the default tier, not to strong.
    assert routed.headers["x-crabbot-source"] == "fixed"
    assert rows[0]["mode"] == "off" and rows[0]["tier"] == "medium"
    # The key is never echoed nor logged.
    assert all(ADMIN_KEY not in r.text for r in (missing, wrong, bad, changed, again))
    assert ADMIN_KEY not in caplog.text


async def test_the_stats_are_the_proxys_own_decisions(seeded_db, embedder, provider):
    async with (
        running_proxy(seeded_db, embedder, provider.base_url, admin_key=ADMIN_KEY) as proxy,
        httpx.AsyncClient(base_url=proxy.url) as http,
    ):
        await _ask(http, proxy.url, CODING, "s1")
        await _ask(http, proxy.url, GREETING, "s2")
        await proxy.gateway.settled()
        refused = await http.get("/admin/routing/stats", headers=_auth(CLIENT_KEY))
        stats = (await http.get("/admin/routing/stats", headers=ADMIN)).json()
    assert refused.status_code == 401
    assert (stats["mode"], stats["pool_size"]) == ("live", proxy.router.pool_size)
    day, ever = stats["windows"]
    assert (day["title"], ever["title"]) == ("last 24 h", "all time")
    assert ever["total"] == day["total"] == 2
    assert ever["by_tier"] == {"cheap": 1, "strong": 1}
    assert ever["by_outcome"] == {"completed": 2}
    assert ever["cost"].startswith("cost")


async def test_a_client_resets_only_its_own_conversation_and_the_admin_any(
    seeded_db, embedder, provider
):
    async with (
        running_proxy(
            seeded_db, embedder, provider.base_url, env_keys=KEYS, admin_key=ADMIN_KEY
        ) as proxy,
        httpx.AsyncClient(base_url=proxy.url) as http,
    ):

        async def reset(key: str | None, body: dict, admin: bool = False) -> httpx.Response:
            headers = (_auth(key) if key else {}) | (ADMIN if admin else {})
            return await http.post("/admin/context/reset", json=body, headers=headers)

        for session in ("kept", "reset", "admin-reset"):
            await _ask(http, proxy.url, CODING, session, "key-of-alice")
        # Mallory cannot reach Alice's conversation: her key resets her own namespace's ...
        own = await reset("key-of-mallory", {"session_key": "kept"})
        # ... and naming Alice's namespace needs the admin key.
        other = await reset("key-of-mallory", {"session_key": "kept", "namespace": "alice"})
        nokey = await reset(None, {"session_key": "kept"})
        mine = await reset("key-of-alice", {"session_key": "reset"})
        admin = await reset(None, {"session_key": "admin-reset", "namespace": "alice"}, True)
        follow = {
            session: await _ask(http, proxy.url, FOLLOW_UP, session, "key-of-alice")
            for session in ("kept", "reset", "admin-reset")
        }
    assert own.json() == {"namespace": "mallory", "session_key": "kept", "had_context": False}
    assert (other.status_code, other.json()["error"]["code"]) == (403, "namespace_not_allowed")
    assert nokey.status_code == 401
    assert mine.json() == {"namespace": "alice", "session_key": "reset", "had_context": True}
    assert admin.json()["had_context"] is True
    sources = {session: r.headers["x-crabbot-source"] for session, r in follow.items()}
    # Untouched, the follow-up continues the coding task; after either reset it starts over.
    assert sources["kept"] == "prior"
    assert sources["reset"] != "prior" and sources["admin-reset"] != "prior"


async def test_a_client_erases_a_persons_words_only_in_its_own_namespace_and_the_admin_in_any(
    tmp_path, provider
):
    async with (
        running_proxy(
            tmp_path / "p.db", None, provider.base_url, env_keys=KEYS, admin_key=ADMIN_KEY
        ) as proxy,
        httpx.AsyncClient(base_url=proxy.url) as http,
    ):

        async def say(text: str, session: str, name: str) -> None:
            # Named as a bot names its speakers: the session header and the message's `name`.
            body = {"model": "cheap", "messages": [{"role": "user", "content": text, "name": name}]}
            headers = {"X-Session-Key": session} | _auth("key-of-alice")
            response = await http.post("/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text

        async def forget(key: str | None, body: object, admin: bool = False) -> httpx.Response:
            headers = (_auth(key) if key else {}) | (ADMIN if admin else {})
            return await http.post("/admin/forget", json=body, headers=headers)

        await say("grandma's first words", "family", "grandma")
        await say("kenji's words", "family", "kenji")
        await say("grandma's words elsewhere", "grandma-alone", "grandma")
        await say("grandma's last words", "family", "grandma")
        grandma = {"session_key": "family", "speaker": "grandma"}
        # Mallory's key erases in her own namespace (nothing of Alice's there) ...
        own = await forget("key-of-mallory", grandma)
        # ... and naming Alice's needs the admin key.
        other = await forget("key-of-mallory", grandma | {"namespace": "alice"})
        nokey = await forget(None, grandma)
        bad = [
            await forget("key-of-alice", body)
            for body in (
                {},
                {"speaker": ""},
                {"session_key": 7},
                grandma | {"namespace": 3},
                [],
                {"speaker": []},
                {"speaker": ["grandma", " "]},
                {"speaker": ["grandma", 7]},
                {"speaker": [f"grandma-{n}" for n in range(9)]},
            )
        ]
        kept = [row["prompt"] for row in await proxy.rows()]
        mine = await forget("key-of-alice", grandma)
        by_admin = await forget(None, {"speaker": "grandma", "namespace": "alice"}, admin=True)
        prompts = [row["prompt"] for row in await proxy.rows()]
    assert own.json() == {
        "namespace": "mallory",
        "session_key": "family",
        "speaker": "grandma",
        "erased": {"prompts": 0, "pool_entries": 0},
    }
    assert (other.status_code, other.json()["error"]["code"]) == (403, "namespace_not_allowed")
    assert nokey.status_code == 401
    assert [response.status_code for response in bad] == [400] * 9
    assert "name the conversation (session_key), the person (speaker)" in bad[0].text
    assert {response.json()["error"]["param"] for response in bad[5:]} == {"speaker"}
    assert kept == [
        "grandma's first words",
        "kenji's words",
        "grandma's words elsewhere",
        "grandma's last words",
    ]
    # Alice's own key: grandma's words in that conversation, and no one else's.
    assert mine.json()["erased"] == {"prompts": 2, "pool_entries": 0}
    # The admin key, naming the namespace and the person alone: grandma everywhere there.
    assert by_admin.json()["erased"] == {"prompts": 1, "pool_entries": 0}
    assert prompts == ["", "kenji's words", "", ""]
    assert proxy.router.counters["admin_refused"] == 1


async def test_an_erasure_names_one_person_by_each_name_their_words_were_kept_under(
    tmp_path, provider
):
    """A bot's person is kept under their id now and under their display name before: one
    erasure names both, and its counts add up; another Mom's words in the chat stay."""
    async with (
        running_proxy(tmp_path / "p.db", None, provider.base_url, env_keys=KEYS) as proxy,
        httpx.AsyncClient(base_url=proxy.url) as http,
    ):
        said = [
            ("old", {}),  # a bot from before the header: the `name` alone says who
            ("new", {"X-Crabbot-Speaker": "telegram:42"}),
            ("the other Mom's", {"X-Crabbot-Speaker": "telegram:7"}),
        ]
        for text, speaker in said:
            body = {
                "model": "cheap",
                "messages": [{"role": "user", "content": text, "name": "Mom"}],
            }
            headers = {"X-Session-Key": "family"} | speaker | _auth("key-of-alice")
            response = await http.post("/chat/completions", json=body, headers=headers)
            assert response.status_code == 200, response.text
        mom = {"session_key": "family", "speaker": ["telegram:42", "Mom", "telegram:42"]}
        erased = await http.post("/admin/forget", json=mom, headers=_auth("key-of-alice"))
        prompts = [row["prompt"] for row in await proxy.rows()]
    assert erased.json() == {
        "namespace": "alice",
        "session_key": "family",
        "speaker": ["telegram:42", "Mom", "telegram:42"],
        "erased": {"prompts": 2, "pool_entries": 0},
    }
    assert prompts == ["", "", "the other Mom's"]


async def test_the_host_and_origin_guard_stands_in_front_of_the_admin_routes(tmp_path, provider):
    # No client keys: the guard is on, and the right admin key does not get past it.
    async with running_proxy(
        tmp_path / "p.db", None, provider.base_url, client_keys=[], admin_key=ADMIN_KEY
    ) as proxy:
        async with httpx.AsyncClient(base_url=proxy.url) as http:
            rebound = await http.get(
                "/admin/routing/stats", headers=ADMIN | {"Host": "attacker.example:8888"}
            )
            page = await http.post(
                "/admin/routing/mode",
                json={"mode": "off"},
                headers=ADMIN | {"Origin": "https://attacker.example"},
            )
            local = await http.get("/admin/routing/stats", headers=ADMIN)
        assert proxy.router.mode == "live"
    assert (rebound.status_code, page.status_code, local.status_code) == (400, 403, 200)


async def test_a_mode_set_through_one_proxy_is_what_another_on_its_database_reports_and_uses(
    tmp_path, provider, monkeypatch
):
    # As --workers N or two hosts on one database: the other re-reads the stored mode when its
    # last read is older than MODE_RECHECK_S (2 s); 0 here, so the test need not wait. On
    # PostgreSQL it is notified (LISTEN/NOTIFY): the test waits until it heard.
    monkeypatch.setattr("router.store.settings.MODE_RECHECK_S", 0.0)
    db = tmp_path / "shared.db"
    async with (
        running_proxy(db, None, provider.base_url, admin_key=ADMIN_KEY) as first,
        running_proxy(db, None, provider.base_url, admin_key=ADMIN_KEY) as second,
        httpx.AsyncClient() as http,
    ):
        changed = await http.post(
            first.url + "/admin/routing/mode", json={"mode": "shadow"}, headers=ADMIN
        )
        if second.router.shared is not None:  # PostgreSQL: notified, not re-read
            await second.router.shared.until(lambda: second.router.mode == "shadow", 10.0)
        health = await http.get(
            second.url.removesuffix("/v1") + "/healthz", headers=_auth(CLIENT_KEY)
        )
        routed = await _ask(http, second.url, GREETING, "s1")
        await second.gateway.settled()
        rows = await second.rows("conv_key LIKE '%:s1'")
    assert changed.json() == {"mode": "shadow", "previous": "live"}
    assert health.json()["mode"] == "shadow"
    assert routed.status_code == 200 and [row["mode"] for row in rows] == ["shadow"]
