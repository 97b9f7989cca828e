"""Two routers on one PostgreSQL act as one (router/cluster/): the mode set on one reaches the
other, a label one learns joins the other's pool, turn 2 on one reads turn 1 on the other as its
context, a reset or an erasure on one clears the other's, one refit serves both, and LISTEN
outlives a PostgreSQL restart (reading the mode and erasures it missed). Each waits on what
the other heard, never on a sleep."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from router import ModelRouter, Secrets
from router import open_router as build_router
from router.cluster.shared_state import SharedState
from router.counters import Counters
from router.signals.continuity import PreviousTurn
from router.store.database import open_database
from router.store.erasure import Scope, erase
from router.store.settings import StoredMode
from tests.conftest import make_config
from tests.test_router import category_reply

pytestmark = pytest.mark.postgres

HEARD_S = 10.0  # how long a test waits for the other process to hear (it takes milliseconds)
CODING = "寫一個 SQL 把重複的訂單刪掉，只留最新的一筆"
ROOT = Path(__file__).resolve().parent.parent


async def open_router(db, embedder, mode="live", groq=None, **sections) -> ModelRouter:
    secrets = Secrets(groq_api_key=None)
    if groq is not None:
        sections.setdefault("categorizer", {})["base_url"] = groq.base_url
        secrets = Secrets(groq_api_key="test-key")
    return await build_router(make_config(db, mode, **sections), secrets, embedder=embedder)


def shared(router: ModelRouter) -> SharedState:
    assert router.shared is not None, "no shared state: is the database PostgreSQL?"
    return router.shared


@pytest.fixture
async def pair(seeded_db, embedder) -> AsyncIterator[tuple[ModelRouter, ModelRouter]]:
    """Two routers on the seeded pool, as two processes on one database would be."""
    a = await open_router(seeded_db, embedder)
    b = await open_router(seeded_db, embedder)
    yield a, b
    await a.close()
    await b.close()


async def test_the_mode_set_anywhere_reaches_the_other_process(pair, seeded_db):
    a, b = pair
    await a.set_mode("shadow")
    await shared(b).until(lambda: b.mode == "shadow", HEARD_S)
    # Set as `crabbot` or a bot on another host would: its own connection, no router.
    db = await open_database(make_config(seeded_db).database)
    try:
        await StoredMode(db, "shadow", Counters()).set("off")
    finally:
        await db.close()
    await shared(a).until(lambda: a.mode == "off", HEARD_S)
    await shared(b).until(lambda: b.mode == "off", HEARD_S)
    assert (await b.route("hello")).source == "fixed"


async def test_a_label_one_process_learns_joins_the_other_pool(seeded_db, embedder, groq_server):
    groq_server.respond = lambda _r: category_reply("creative", 0.95)
    a = await open_router(seeded_db, embedder, "shadow", groq_server, pool={"trusted_after": 0})
    b = await open_router(seeded_db, embedder, "shadow", groq_server)
    text = "寫一首關於外婆家院子裡那棵老芒果樹的小詩，要有夏天蟬叫的感覺"
    try:
        before = b.pool_size
        await a.route(text, conv_key="grandma")
        assert a.pool is not None and a.pool.contains_text(text)
        await shared(b).until(lambda: b.pool is not None and b.pool.contains_text(text), HEARD_S)
        assert b.pool_size == before + 1
        assert b.counters["pool_rows_heard"] == 1
        # In b's index too: its nearest neighbour is the label a learned.
        assert b.pool is not None and a.embedder is not None
        nearest = b.pool.search(await a.embedder.aembed_message(text), 1)[0]
        assert (nearest.text, nearest.category) == (text, "creative")
        # /forget of the conversation on a: the label leaves b's pool too.
        await a.erase(Scope(conv_key="grandma"))
        assert b.pool is not None
        await shared(b).until(lambda: not b.pool.contains_text(text), HEARD_S)
        assert b.pool_size == before
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("store_prompts", [True, False])
async def test_turn_two_on_one_process_reads_turn_one_on_the_other(
    seeded_db, embedder, store_prompts
):
    privacy = {"store_prompts": store_prompts}
    a = await open_router(seeded_db, embedder, privacy=privacy)
    b = await open_router(seeded_db, embedder, privacy=privacy)
    now = time.time()
    try:
        first = await a.route(CODING, conv_key="family", at=now)
        assert first.tier == "strong"
        await shared(b).until(lambda: b.context.held("family") is not None, HEARD_S)
        heard = b.context.held("family")
        assert heard is not None and heard.category == first.category
        # The text only where prompts are kept; the vector either way (float16).
        assert heard.text == (CODING if store_prompts else "")
        assert heard.vector is not None and a.embedder is not None
        assert np.allclose(heard.vector, await a.embedder.aembed_message(CODING), atol=2e-3)
        follow_up = await b.route("why?", conv_key="family", at=now + 1)
    finally:
        await a.close()
        await b.close()
    assert (follow_up.tier, follow_up.source) == ("strong", "prior")


async def test_a_turn_after_a_reaction_goes_back_to_the_task_in_any_process(seeded_db, embedder):
    """A request and its reaction routed by one process: the turn after them goes back to
    the request's task in a process that heard them, and in one started after (read from the
    log)."""
    request, reaction = "write a python script that prints every line of a file", "lol thanks"
    then = "wait, why does it print a blank line after each one?"
    a = await open_router(seeded_db, embedder)
    b = await open_router(seeded_db, embedder)
    now = time.time()
    late: ModelRouter | None = None
    try:
        for offset, text in ((0, request), (30, reaction)):
            decision = await a.route(text, conv_key="family", at=now + offset, user_key="kid")
            a.finish(decision, "completed")
        assert await a.log.flush(HEARD_S)
        await shared(b).until(
            lambda: (
                (held := b.context.held("family", "kid")) is not None
                and held.task_behind is not None
            ),
            HEARD_S,
        )
        heard = await b.route(then, conv_key="family", at=now + 50, user_key="kid")
        late = await open_router(seeded_db, embedder)
        await shared(late).until(lambda: late.context.held("family", "kid") is not None, HEARD_S)
        read = await late.route(then, conv_key="family", at=now + 50, user_key="kid")
    finally:
        for router in (a, b, late):
            if router is not None:
                await router.close()
    assert (heard.tier, read.tier) == ("strong", "strong"), (heard.category, read.category)


async def test_a_reset_on_one_process_clears_the_context_on_the_other(pair):
    a, b = pair
    now = time.time()
    await a.route(CODING, conv_key="family", at=now)
    await shared(b).until(lambda: b.context.held("family") is not None, HEARD_S)
    assert await a.forget("family", at=now + 1)
    await shared(b).until(lambda: b.context.held("family") is None, HEARD_S)
    follow_up = await b.route("why?", conv_key="family", at=now + 2)
    assert follow_up.source != "prior"


async def test_erasing_a_quoted_person_on_one_process_cuts_the_quote_on_the_other(pair):
    """Mom's reply read with Dad's message under it reaches the other process whole; Dad's
    erasure on the first cuts it back to Mom's words there too."""
    a, b = pair
    # Dad's message never routed nor embedded here: another test's may sit in the shared
    # embedder's cache, and a quote whose vector is known is read as the context, not under.
    a.embedder.clear_cache()
    dad_says = "my python script crashes with KeyError: 'date' when it reads the orders csv"
    reply = await a.route(
        "can you fix this for him?",
        conv_key="family",
        user_key="mom",
        replied_to=dad_says,
        replied_author="dad",
    )

    def mom_holds() -> str | None:
        held = b.context.held("family", "mom")
        return None if held is None else held.text

    await shared(b).until(lambda: mom_holds() is not None, HEARD_S)
    assert dad_says in (mom_holds() or "")
    await a.erase(Scope(user_key="dad"))
    await shared(b).until(lambda: mom_holds() == "can you fix this for him?", HEARD_S)
    held = b.context.held("family", "mom")
    assert held is not None and held.category == reply.category and held.vector is None


async def test_the_refit_is_done_once_and_the_other_process_loads_it(pair):
    a, b = pair
    assert a.fitting is not None and b.fitting is not None
    a.fitting.refit()
    b.fitting.refit()  # at the same moment: one holds the refit's lock, the other waits for it
    await a.fitting.wait()
    await b.fitting.wait()
    counters = a.counters + b.counters
    assert counters["refits_left_to_another_process"] == 1
    loser = a if a.counters["refits_left_to_another_process"] else b
    winner = b if loser is a else a
    await shared(loser).until(lambda: loser.counters["refits_adopted"] == 1, 30.0)
    assert winner.local is not None and loser.local is not None
    ours, theirs = winner.local.classifier.state(), loser.local.classifier.state()
    assert all(np.array_equal(ours[name], theirs[name]) for name in ours)


# -- a PostgreSQL of this test's own, to restart -------------------------------------------------


def throwaway() -> object:
    spec = importlib.util.spec_from_file_location("pg_throwaway", ROOT / "scripts/pg_throwaway.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def own_server(monkeypatch) -> Iterator[tuple[str, Path]]:
    """A PostgreSQL cluster of this test's own (the suite's is shared), its database's URL in
    CRABBOT_DATABASE_URL; (URL, data folder)."""
    pg = throwaway()
    server = pg.start(None)  # type: ignore[attr-defined]  # a folder postgres can reach
    folder = Path(server.split("host=", 1)[1].split("&", 1)[0])

    async def create() -> None:
        conn = await asyncpg.connect(server)
        await conn.execute("CREATE DATABASE crabbot")
        await conn.close()

    asyncio.run(create())
    url = server.replace("/postgres?", "/crabbot?")
    monkeypatch.setenv("CRABBOT_DATABASE_URL", url)
    yield url, folder / "data"
    pg.stop(folder)  # type: ignore[attr-defined]


def restart(data: Path) -> None:
    pg = throwaway()
    argv = [str(pg.bindir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "restart"]  # type: ignore[attr-defined]
    subprocess.run(pg.as_owner(argv), check=True, stdout=subprocess.DEVNULL)  # type: ignore[attr-defined]


async def test_listen_survives_a_postgresql_restart_and_reads_what_it_missed(
    own_server, tmp_path, embedder
):
    _url, data = own_server
    a = await open_router(tmp_path / "unused.db", embedder, pool={"seed": False})
    b = await open_router(tmp_path / "unused.db", embedder, pool={"seed": False})
    try:
        await shared(b).until(lambda: shared(b).connects == 1, HEARD_S)
        b.stored_mode.value = "off"  # as if a change were missed while it was away
        # And an erasure: Dad's turn b heard, erased on a without b hearing of it.
        b.context.heard("c2", PreviousTurn("coding", time.time() - 60, CODING), "dad")
        await erase(a.conn, Scope(user_key="dad"))
        assert b.context.held("c2", "dad") is not None
        restarting = asyncio.create_task(asyncio.to_thread(restart, data))
        # Routing needs no database: b answers while PostgreSQL restarts.
        decisions = []
        while not restarting.done() or len(decisions) < 5:
            decisions.append(await b.route(f"hello {len(decisions)}", conv_key="c"))
            b.finish(decisions[-1], "completed")
            await asyncio.sleep(0.05)  # a client's pace: requests all through the restart
        await restarting
        await shared(b).until(lambda: shared(b).connects == 2 and shared(b).connected, 30.0)
        assert b.mode == "live"  # read again on reconnecting
        assert b.context.held("c2", "dad") is None  # its notice read on reconnecting
        assert sum(v for k, v in b.counters.items() if k.startswith("listen_lost_")) >= 1
        await a.set_mode("shadow")
        await shared(b).until(lambda: b.mode == "shadow", HEARD_S)
        # Every decision routed meanwhile is in the log once the database is back.
        assert await b.log.flush(30.0)
        rows = await b.conn.fetch_all("SELECT decision_id FROM routing_log")
        assert {d.id for d in decisions} <= {row[0] for row in rows}
    finally:
        await a.close()
        await b.close()
