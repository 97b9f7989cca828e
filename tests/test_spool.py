"""The routing log's crash spool: a queued row is on disk (owner-only, keeping what the row keeps)
until its batch is committed; rows a killed process left are written by the next start, once,
never undoing a finished row; a live process's spool is left to it."""

from __future__ import annotations

import stat
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from router import ModelRouter, Secrets, open_router
from router.decision import RoutingDecision
from router.store import spool as spool_module
from router.store.database import OperationalError
from router.store.routing_log import INSERT_SQL, row_of
from router.store.spool import SUFFIX, Spool, spool_folder
from tests.conftest import make_config
from tests.db_helpers import fetch

PLAIN = {"local": {"enabled": False}, "categorizer": {"enabled": False}}


async def _router(db: Path, store_prompts: bool = True) -> ModelRouter:
    config = make_config(db, privacy={"store_prompts": store_prompts}, **PLAIN)
    return await open_router(config, Secrets(groq_api_key=None))


def _spooled(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.glob(f"*{SUFFIX}")))


def _decision(router: ModelRouter, text: str) -> RoutingDecision:
    """A decision that is not open in the router (nothing writes it unless the test does)."""
    decision = router.decisions.named("live", "gpt-4.1-nano", "cheap", "alias")
    decision.text, decision.conv_key, decision.at = text, "conv", time.time()
    return decision


async def _left_by_a_killed_process(
    db: Path, text: str, as_spooled: Callable[[tuple[Any, ...]], tuple[Any, ...]] = lambda r: r
) -> Path:
    """The spool folder, holding a completed decision's row as a process that died left it."""
    folder = spool_folder(make_config(db).database)
    assert folder is not None
    first = await _router(db)
    decision = _decision(first, text)
    decision.outcome = "completed"
    await first.close()
    dead = Spool(folder, Counter())
    assert dead.open()
    dead.append(as_spooled(row_of(decision)))
    dead.close(keep=True)  # its lock is gone, as with the process
    return folder


def _answered(router: ModelRouter, text: str) -> RoutingDecision:
    decision = router.named("gpt-4.1-nano", "cheap", "alias", text, "conv")
    router.finish(decision, "completed")
    return decision


@pytest.mark.parametrize("store_prompts", [True, False])
async def test_a_queued_row_is_on_disk_until_committed(tmp_path, store_prompts):
    db = tmp_path / "crabbot.db"
    folder = spool_folder(make_config(db).database)
    assert folder is not None
    router = await _router(db, store_prompts)
    try:
        decision = _answered(router, "my secret plan")
        # When `finish` returns, before any commit: the row is in the spool, as the row keeps it.
        spooled = _spooled(folder)
        assert decision.id.encode() in spooled
        assert (b"my secret plan" in spooled) is store_prompts
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert {stat.S_IMODE(p.stat().st_mode) for p in folder.glob(f"*{SUFFIX}")} == {0o600}
        assert await router.log.flush(10.0)
        assert _spooled(folder) == b""  # committed: gone from the spool
    finally:
        await router.close()
    assert list(folder.iterdir()) == []  # a graceful stop leaves nothing


def test_committed_rows_leave_while_later_rows_wait(tmp_path):
    spool = Spool(tmp_path / "spool", Counter())
    assert spool.open()
    for n in range(3):
        spool.append((f"row {n}",))
    spool.committed(2)  # a batch of 2 committed, row 2 still waits: later rows go elsewhere
    spool.append(("row 3",))
    assert len(spool.files) == 2
    assert b'["row 2"]' in _spooled(spool.folder)
    spool.committed(1)  # the first file's last row: that file goes
    assert len(spool.files) == 1
    assert _spooled(spool.folder) == b'["row 3"]\n'
    spool.committed(1)  # nothing waits: the file is emptied, kept for the next rows
    assert _spooled(spool.folder) == b""
    spool.append(("row 4",))
    assert _spooled(spool.folder) == b'["row 4"]\n'
    spool.close()
    assert list(spool.folder.iterdir()) == []


async def test_rows_a_killed_process_left_are_written_once_at_the_next_start(tmp_path):
    db = tmp_path / "crabbot.db"
    folder = spool_folder(make_config(db).database)
    assert folder is not None
    first = await _router(db)
    forgotten = _answered(first, "forget me")
    held, ended = _decision(first, "held"), _decision(first, "ended")
    await first.conn.execute(INSERT_SQL, row_of(held, still_open=True))
    ended_open = row_of(ended, still_open=True)
    ended.outcome = "completed"
    await first.conn.execute(INSERT_SQL, row_of(ended))
    assert await first.log.flush(10.0)
    cleared = "UPDATE routing_log SET prompt = '' WHERE decision_id = ?"
    await first.conn.execute(cleared, (forgotten.id,))
    unwritten, elsewhere = _decision(first, "unwritten"), _decision(first, "elsewhere")
    unwritten.outcome = held.outcome = elsewhere.outcome = "completed"
    await first.close()

    # What a process killed just after its last batch committed leaves: that batch (rows since
    # changed: a /forget, a final row) and rows never committed, the last line cut short.
    dead = Spool(folder, Counter())
    assert dead.open()
    for row in (row_of(forgotten), ended_open, row_of(held), row_of(unwritten)):
        dead.append(row)
    with dead.files[0].open("ab") as handle:
        handle.write(b'["cut sh')
    dead.close(keep=True)  # its lock is gone, as with the process
    alive = Spool(folder, Counter())  # a running process's spool: its rows are its own
    assert alive.open()
    alive.append(row_of(elsewhere))

    try:
        for _ in range(2):  # a second start finds nothing more to write
            second = await _router(db)
            assert second.counters["spool_errors"] == 0
            await second.close()
            rows = await fetch(db, "SELECT prompt, outcome FROM routing_log ORDER BY prompt")
            assert rows == [
                ("", "completed"),  # a row since cleared stays cleared
                ("ended", "completed"),  # a spooled open row never reopens a finished row
                ("held", "completed"),  # its final row ends the open one
                ("unwritten", "completed"),  # once, whatever the number of starts
            ]
        assert [path for path in folder.iterdir() if path not in alive.files] == []
    finally:
        alive.close()


async def test_a_row_spooled_by_an_older_crabbot_is_written_with_nulls_for_new_columns(tmp_path):
    """An upgrade after a kill: the spool's rows lack the columns added since; they are written,
    not dropped."""
    db = tmp_path / "crabbot.db"
    # The log had no knn_swayed column then.
    await _left_by_a_killed_process(db, "spooled before the upgrade", lambda row: row[:-1])
    second = await _router(db)
    try:
        assert second.counters["log_rows_dropped"] == 0
    finally:
        await second.close()
    rows = await fetch(db, "SELECT prompt, outcome, knn_swayed FROM routing_log")
    assert rows == [("spooled before the upgrade", "completed", None)]


async def test_rows_refused_at_a_start_are_written_once_the_database_takes_them(
    tmp_path, monkeypatch
):
    # A killed proxy started again while PostgreSQL restarts: its predecessor's rows cannot be
    # written at the start, and no later start may come. They are retried while it serves.
    db = tmp_path / "crabbot.db"
    folder = await _left_by_a_killed_process(db, "spooled before the kill")

    write = spool_module._write
    refusals = iter([OperationalError("the database system is shutting down")])

    async def refused_once(*args: Any) -> None:
        if (refusal := next(refusals, None)) is not None:
            raise refusal
        await write(*args)

    monkeypatch.setattr(spool_module, "_write", refused_once)
    monkeypatch.setattr(spool_module, "RETRY_S", (0.0,))
    second = await _router(db)
    try:
        assert second.counters["spool_errors"] == 1  # refused at the start; it serves anyway
        assert second.log.replay is not None
        await second.log.replay.written()
        rows = await fetch(db, "SELECT prompt, outcome FROM routing_log")
    finally:
        await second.close()
    assert rows == [("spooled before the kill", "completed")]
    assert list(folder.glob(f"*{SUFFIX}")) == []
