"""`crabbot proxy --workers N`: N processes answer on one socket, each routing with its own
embedder on its share of the cores, into one database and one set of metrics; Ctrl-C stops them
all with every row written; a worker that dies is replaced, and only its open rows are marked
interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI, PermissionDeniedError
from prometheus_client.parser import text_string_to_metric_families

from bot.cli import build_parser
from router.proxy.supervisor import threads_per_worker
from tests.db_helpers import fetch_sync
from tests.fakes.openai_api import FakeOpenAI
from tests.proxy_helpers import proxy_process, start_proxy_process

ROUNDS = 30  # rounds of concurrent requests at most, until both workers have answered some
CONCURRENT = 8
DEADLINE_S = 30.0  # for what another process does (commit a row, start a worker)


def _config(tmp_path: Path, db: Path, provider: FakeOpenAI, local: bool) -> Path:
    path = tmp_path / "crabbot.toml"
    path.write_text(
        f'[database]\npath = "{db}"\n[routing]\nmode = "live"\n'
        f"[local]\nenabled = {str(local).lower()}\n[categorizer]\nenabled = false\n"
        f'[proxy]\nport = 0\nbase_url = "{provider.base_url}"\nmax_retries = 0\n'
        'allowed_models = ["auto", "cheap"]\n',
        encoding="utf-8",
    )
    return path


def _pids(ready_line: str) -> list[int]:
    """The worker pids the start-up line names: '..., 2 workers: pids 11 12); Ctrl-C ...'."""
    listed = ready_line.split("pids ", 1)[1].split(")", 1)[0]
    return [int(pid) for pid in listed.split()]


async def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(url.removesuffix("/v1") + "/metrics")).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _total(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in metrics.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


def _served_by(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[int, float]:
    """Requests answered so far by each live worker, by pid."""
    return {
        int(dict(labels)["pid"]): value
        for (name, labels), value in metrics.items()
        if name == "crabbot_proxy_worker_requests"
    }


def _rows(
    db: Path, query: str = "SELECT prompt, outcome FROM routing_log ORDER BY id"
) -> list[tuple[object, ...]]:
    return fetch_sync(db, query)


async def _until_rows(db: Path, query: str, count: int) -> list[tuple[object, ...]]:
    """The rows of `query` once there are `count`: another process commits them, so the file is
    read until it shows them."""
    started = time.monotonic()
    while len(rows := _rows(db, query)) < count:
        assert time.monotonic() - started < DEADLINE_S, f"{query}: {len(rows)} rows of {count}"
        await asyncio.sleep(0.05)
    return rows


async def _round(url: str, tag: str) -> tuple[int, int]:
    """CONCURRENT routed requests, each client on connections of its own, and two requests for
    a model the proxy refuses: (answered, refused)."""

    async def ask(n: int) -> None:
        messages = [{"role": "user", "content": f"Write a SQL query, please ({tag}.{n})"}]
        async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=messages
            )
        assert raw.headers["x-crabbot-source"] in ("knn", "prior")  # the worker's embedder

    async def refused() -> None:
        messages = [{"role": "user", "content": "hi"}]
        async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            with pytest.raises(PermissionDeniedError):
                await client.chat.completions.create(model="strong", messages=messages)

    await asyncio.gather(*(ask(n) for n in range(CONCURRENT)), refused(), refused())
    return CONCURRENT, 2


async def _stop_with_ctrl_c(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGINT)
    return await asyncio.wait_for(process.wait(), DEADLINE_S)


async def test_two_workers_answer_on_one_socket_into_one_log_and_one_metrics(
    tmp_path, seeded_db, provider
):
    config = _config(tmp_path, seeded_db, provider, local=True)
    env = {"TMPDIR": str(tmp_path)}  # where the parent keeps the workers' metrics
    answered = refused = 0
    async with proxy_process(config, "--workers", "2", env=env) as (process, line):
        url, pids = line.split()[3], _pids(line)
        assert len(set(pids)) == 2 and os.getpid() not in pids
        cap = f"OMP_NUM_THREADS={threads_per_worker(2, len(os.sched_getaffinity(0)))}"
        for pid in pids:  # each worker's OpenMP team gets its share of the cores
            assert cap.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for number in range(ROUNDS):
            more, fewer = await _round(url, f"round{number}")
            answered, refused = answered + more, refused + fewer
            served = _served_by(await _metrics(url))
            if len(served) == 2 and all(served.values()):
                break
        metrics = await _metrics(url)
        assert sorted(_served_by(metrics)) == sorted(pids)
        assert all(_served_by(metrics).values()), "one worker answered every request"
        # Whichever worker answers /metrics counts what every worker did.
        requests = "crabbot_proxy_requests_total"
        assert _total(metrics, requests, endpoint="/v1/chat/completions", status="200") == answered
        assert _total(metrics, requests, endpoint="/v1/chat/completions", status="403") == refused
        assert _total(metrics, "crabbot_routing_decisions_total") == answered
        assert _total(metrics, "crabbot_router_models_refused_total") == refused
        assert ("crabbot_routing_log_queue_depth", ()) in metrics  # summed over the workers
        assert await _stop_with_ctrl_c(process) == 130
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    rows = _rows(seeded_db)
    assert len(rows) == answered and {outcome for _, outcome in rows} == {"completed"}
    assert not list(tmp_path.glob("crabbot-proxy-metrics-*")), "the metrics folder is left"


async def test_a_killed_worker_is_replaced_and_only_its_open_rows_are_marked_interrupted(
    tmp_path, provider
):
    db = tmp_path / "workers.db"
    config = _config(tmp_path, db, provider, local=False)
    provider.stall_after = 1  # streams the provider holds after their first piece
    clients: list[AsyncOpenAI] = []
    streams = []
    open_query = "SELECT prompt, open_pid FROM routing_log WHERE outcome IS NULL"
    async with proxy_process(config, "--workers", "2") as (process, line):
        url, pids = line.split()[3], _pids(line)
        assert process.stderr is not None
        # Held streams on connections of their own until both workers hold some: a request
        # open for a second has its row written open, naming its worker.
        for number in range(ROUNDS):
            for n in range(CONCURRENT):
                client = AsyncOpenAI(base_url=url, api_key="unused", max_retries=0)
                clients.append(client)
                stream = await client.chat.completions.create(
                    model="cheap",
                    messages=[{"role": "user", "content": f"held {number}.{n}"}],
                    stream=True,
                )
                assert (await anext(aiter(stream))).choices[0].delta.role == "assistant"
                streams.append(stream)
            held = dict(await _until_rows(db, open_query, len(streams)))
            if set(held.values()) == set(pids):
                break
        assert set(held.values()) == set(pids)
        victim, survivor = pids
        os.kill(victim, signal.SIGKILL)
        while f"in place of {victim}" not in (
            line := (await asyncio.wait_for(process.stderr.readline(), DEADLINE_S)).decode()
        ):
            assert line, f"the proxy stopped (exit {await process.wait()})"
        replacement = int(line.split()[3])
        assert replacement not in pids
        # The replacement marked the dead worker's open rows at its start; the living one's
        # stay open.
        outcomes = dict(_rows(db, "SELECT prompt, outcome FROM routing_log"))
        assert {outcomes[prompt] for prompt, pid in held.items() if pid == victim} == {
            "interrupted"
        }
        assert {outcomes[prompt] for prompt, pid in held.items() if pid == survivor} == {None}
        provider.stall_after = None
        async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="cheap", messages=[{"role": "user", "content": f"after {n}"}]
                    )
                    for n in range(CONCURRENT)
                )
            )
        for client in clients:  # the held streams' clients leave
            await client.close()
        assert await _stop_with_ctrl_c(process) == 130
    outcomes = dict(_rows(db, "SELECT prompt, outcome FROM routing_log"))
    assert [outcomes[f"after {n}"] for n in range(CONCURRENT)] == ["completed"] * CONCURRENT
    assert {outcomes[prompt] for prompt, pid in held.items() if pid == survivor} == {"client_gone"}


async def test_workers_stop_by_themselves_when_their_parent_is_killed(tmp_path, provider):
    db = tmp_path / "orphans.db"
    config = _config(tmp_path, db, provider, local=False)
    process, line = await start_proxy_process(
        config, "--workers", "2", env={"TMPDIR": str(tmp_path)}
    )
    pids = _pids(line)
    try:
        async with AsyncOpenAI(base_url=line.split()[3], api_key="unused", max_retries=0) as client:
            for n in range(CONCURRENT):
                messages = [{"role": "user", "content": f"before the kill {n}"}]
                await client.chat.completions.create(model="cheap", messages=messages)
    finally:
        process.kill()
        await process.wait()
    # Each worker sees its parent's end of their pipe close, and stops as after a Ctrl-C.
    started = time.monotonic()
    while running := [pid for pid in pids if _running(pid)]:
        assert time.monotonic() - started < DEADLINE_S, f"workers still running: {running}"
        await asyncio.sleep(0.05)
    assert _rows(db) == [(f"before the kill {n}", "completed") for n in range(CONCURRENT)]
    # The last worker out removes the metrics folder its killed parent could not.
    assert not list(tmp_path.glob("crabbot-proxy-metrics-*")), "the metrics folder is left"


async def _try_connection(host: str, port: int) -> str:
    """What a new client meets: 'refused', 'answered', or 'reset' (accepted, then closed with
    no answer); never a wait beyond DEADLINE_S."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        # Queued on a stopping worker's listener, which closed before connect() had returned.
        return "reset"
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), DEADLINE_S)
    except ConnectionResetError:
        return "reset"
    finally:
        writer.close()
    return "answered" if answer.startswith(b"HTTP/1.1 ") else "reset"


async def test_after_sigterm_new_connections_are_refused_at_once_and_a_cut_stream_is_interrupted(
    tmp_path, provider
):
    db = tmp_path / "stop.db"
    config = _config(tmp_path, db, provider, local=False)
    provider.stall_after = 1  # the stream the provider holds: its worker stops last
    async with proxy_process(config, "--workers", "2") as (process, line):
        url, pids = line.split()[3], _pids(line)
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="cheap", messages=[{"role": "user", "content": "held"}], stream=True
            )
            assert (await anext(aiter(stream))).choices[0].delta.role == "assistant"
            process.send_signal(signal.SIGTERM)
            met: list[str] = []
            while len(met) < 1000 and "refused" not in met:
                met.append(await _try_connection(host, int(port)))
            # Refused while the held stream's worker is still stopping, not once all exited.
            stopping = [pid for pid in pids if _running(pid)]
            later = [await _try_connection(host, int(port)) for _ in range(20)]
            with contextlib.suppress(httpx.HTTPError, openai.APIError):
                async for _ in stream:  # cut when the worker's grace for open requests ends
                    pass
        assert await asyncio.wait_for(process.wait(), DEADLINE_S) == 143
    assert met[-1] == "refused" and set(met) <= {"answered", "refused", "reset"}, met
    assert stopping, "every worker had exited before new connections were refused"
    assert later == ["refused"] * 20
    assert _rows(db) == [("held", "interrupted")]


def _running(pid: int) -> bool:
    """Alive, and not a zombie waiting for whoever adopted it to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_workers_is_a_whole_number_of_one_or_more(capsys):
    assert build_parser().parse_args(["proxy"]).workers == 1
    assert build_parser().parse_args(["proxy", "--workers", "3"]).workers == 3
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["proxy", "--workers", bad])
        assert "not a whole number of 1 or more" in capsys.readouterr().err


def test_workers_share_the_cores_between_their_openmp_threads():
    assert threads_per_worker(1, 2) == 2
    assert threads_per_worker(2, 2) == 1
    assert threads_per_worker(3, 2) == 1  # never none
    assert threads_per_worker(2, 8) == 4
    assert threads_per_worker(2, 8, "2") == 2  # a smaller OMP_NUM_THREADS is kept
    assert threads_per_worker(2, 8, "16") == 4  # a larger one is capped
