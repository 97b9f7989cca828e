"""The cluster benchmark's client host: N clients sending `model="auto"` chat completions to the
balancer on kept-alive connections for a fixed time, each request with a timeout (a request that
reaches it is a hang, counted apart from an error), and two probes of the proxies' shared state:
how long a label one proxy learns takes to be in every proxy's pool, and how long a routing mode
set on one proxy (its admin endpoint) takes to show on every proxy's /healthz. Prints `go` when
the clients start, then one JSON line of results.

Run by scripts/bench_cluster.py on the client host; not meant to be run by hand."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from bench_proxy import MESSAGES
from cluster_upstream import PROBE

POLL_S = 0.01  # the probes read every proxy's /healthz this often
PROBE_LIMIT_S = 10.0  # a probe gives up after this long and says so
READY_LIMIT_S = 60.0
METRICS = (
    "crabbot_router_log_rows_dropped_total",
    "crabbot_router_log_write_errors_total",
    "crabbot_router_db_errors_total",
    "crabbot_routing_log_queue_depth",
    "crabbot_router_spool_rows_replayed_total",
    "crabbot_router_spool_errors_total",
)


@dataclass
class Tally:
    """What the clients saw."""

    sent: int = 0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # OpenAI-format errors, by status/code
    malformed: dict[str, int] = field(default_factory=dict)  # any other failure, by what it was
    # Answers whose head arrived and whose body was cut, by the proxy sending them: a SIGKILL
    # mid-answer, which no balancer can turn into an error once the head has passed.
    cut: dict[str, int] = field(default_factory=dict)
    hung: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    routing_ms: list[float] = field(default_factory=list)  # the proxies' X-Crabbot-Routing-Ms
    # The decision id of each answer, by the proxy that gave it (the balancer's X-Crabbot-Proxy).
    decisions: dict[str, list[str]] = field(default_factory=dict)
    # Each second of the run: [answered, failed, hung] of the requests sent in it.
    timeline: dict[int, list[int]] = field(default_factory=dict)

    def count(self, second: int, slot: int) -> None:
        self.timeline.setdefault(second, [0, 0, 0])[slot] += 1


def error_kind(status: int, payload: bytes) -> tuple[bool, str]:
    """(whether the body is an OpenAI-format error, a short name for it)."""
    try:
        error = json.loads(payload)["error"]
        if isinstance(error, dict) and "message" in error and "type" in error:
            return True, f"{status} {error.get('code') or error['type']}"
    except (ValueError, KeyError, TypeError):
        pass
    return False, f"{status} {payload[:60]!r}"


async def client(
    number: int, url: str, key: str, end: float, timeout_s: float, tally: Tally, t0: float
) -> None:
    """One client: one kept-alive connection, one request after the other until `end`."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        n = 0
        while time.monotonic() < end:
            text = f"{MESSAGES[(number + n) % len(MESSAGES)]} (client {number}, turn {n})"
            body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
            body["user"] = f"bench-{number}"
            n += 1
            tally.sent += 1
            started = time.monotonic()
            second = int(started - t0)
            try:
                async with session.post(url, json=body, timeout=timeout) as response:
                    try:
                        payload = await response.read()
                    except aiohttp.ClientPayloadError:
                        proxy = response.headers.get("x-crabbot-proxy", "?")
                        tally.cut[proxy] = tally.cut.get(proxy, 0) + 1
                        tally.count(second, 1)
                        continue
            except TimeoutError:
                tally.hung += 1
                tally.count(second, 2)
                continue
            except aiohttp.ClientError as error:
                kind = f"connection: {type(error).__name__}"
                tally.malformed[kind] = tally.malformed.get(kind, 0) + 1
                tally.count(second, 1)
                continue
            if response.status == 200 and b'"choices"' in payload:
                tally.answered += 1
                routing = response.headers.get("x-crabbot-routing-ms")
                if routing is not None:
                    tally.routing_ms.append(float(routing))
                proxy = response.headers.get("x-crabbot-proxy", "?")
                decision = response.headers.get("x-crabbot-decision-id", "")
                tally.decisions.setdefault(proxy, []).append(decision)
                tally.latencies_ms.append((time.monotonic() - started) * 1000)
                tally.count(second, 0)
                continue
            openai_format, kind = error_kind(response.status, payload)
            into = tally.failed if openai_format else tally.malformed
            into[kind] = into.get(kind, 0) + 1
            tally.count(second, 1)


HEALTHZ_MS: list[float] = []  # each /healthz round trip of the probes: their resolution


class Refused(Exception):
    """The proxy's host refuses connections: nothing listens there any more (killed)."""


async def healthz(session: aiohttp.ClientSession, proxy: str) -> dict[str, Any] | None:
    """A proxy's /healthz (with the key: mode and pool size); None while it does not answer (a
    busy proxy may be slow to); Refused when nothing listens."""
    started = time.monotonic()
    try:
        async with session.get(f"{proxy}/healthz", timeout=aiohttp.ClientTimeout(5)) as response:
            status = dict(await response.json()) if response.status == 200 else None
        HEALTHZ_MS.append((time.monotonic() - started) * 1000)
        return status
    except aiohttp.ClientConnectorError as error:
        raise Refused(proxy) from error
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def status_of(session: aiohttp.ClientSession, proxy: str) -> dict[str, Any] | None:
    """/healthz, None whatever the reason it did not answer."""
    try:
        return await healthz(session, proxy)
    except Refused:
        return None


async def until_every(
    session: aiohttp.ClientSession, proxies: list[str], done: Any, started: float
) -> dict[str, float | str | None]:
    """Seconds from `started` until `done(proxy, healthz)` held on each proxy; "down" for a
    proxy that stopped answering first (killed meanwhile); None: not within PROBE_LIMIT_S."""

    async def one(proxy: str) -> float | str | None:
        while time.monotonic() - started < PROBE_LIMIT_S:
            try:
                status = await healthz(session, proxy)
            except Refused:
                return "down"
            if status is not None and done(proxy, status):
                return time.monotonic() - started
            await asyncio.sleep(POLL_S)
        return None

    return dict(zip(proxies, await asyncio.gather(*(one(p) for p in proxies)), strict=True))


async def label_probe(session: aiohttp.ClientSession, proxies: list[str]) -> dict[str, Any]:
    """A new label taught through the first proxy: seconds from its answer until each proxy's
    pool has grown by it."""
    before = {p: (await status_of(session, p) or {}).get("pool_size") for p in proxies}
    text = f"{PROBE} {secrets.token_hex(6)}: write a Rust macro that {secrets.token_hex(4)}"
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "user": "probe"}
    async with session.post(f"{proxies[0]}/v1/chat/completions", json=body) as response:
        await response.read()
        taught = {
            "status": response.status,
            "source": response.headers.get("x-crabbot-source"),
            "decision": response.headers.get("x-crabbot-decision-id"),
        }
    started = time.monotonic()

    def grown(proxy: str, status: dict[str, Any]) -> bool:
        size, old = status.get("pool_size"), before.get(proxy)
        return isinstance(size, int) and isinstance(old, int) and size > old

    seconds = await until_every(session, proxies, grown, started)
    return {"request": taught, "pool_before": before, "seconds": seconds}


async def mode_probe(
    session: aiohttp.ClientSession, proxies: list[str], admin_key: str, new_mode: str
) -> dict[str, Any]:
    """The mode changed on the first proxy, as the bot's `/routing mode` does (its admin
    endpoint; stored for every process on the database): seconds from the change until each
    proxy's /healthz shows it."""
    before = {p: (await status_of(session, p) or {}).get("mode") for p in proxies}
    started = time.monotonic()
    async with session.post(
        f"{proxies[0]}/admin/routing/mode",
        json={"mode": new_mode},
        headers={"X-Crabbot-Admin-Key": admin_key},
    ) as response:
        answer = await response.json()
    if response.status != 200:
        raise SystemExit(f"{proxies[0]} refused the mode change: {answer}")
    stored_s = time.monotonic() - started
    seconds = await until_every(session, proxies, lambda _p, s: s.get("mode") == new_mode, started)
    return {
        "old": answer.get("previous"),
        "new": new_mode,
        "before": before,
        "store_s": stored_s,
        "seconds": seconds,
    }


async def metrics(session: aiohttp.ClientSession, proxy: str) -> dict[str, float] | None:
    """The proxy's counters that say whether routing-log rows were lost (None: no answer)."""
    try:
        async with session.get(f"{proxy}/metrics", timeout=aiohttp.ClientTimeout(5)) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return None
    found: dict[str, float] = {}
    for name in METRICS:
        values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
        found[name] = sum(float(v) for v in values)
    return found


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + READY_LIMIT_S
    while await status_of(session, url) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the balancer at {url} did not answer /healthz")
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    proxies = args.proxies.split(",")
    headers = {"Authorization": f"Bearer {args.key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        await wait_ready(session, args.balancer)
        tally = Tally()
        t0 = time.monotonic()
        end = t0 + args.seconds
        url = f"{args.balancer}/v1/chat/completions"
        print("go", flush=True)
        clients = [
            asyncio.create_task(client(n, url, args.key, end, args.timeout, tally, t0))
            for n in range(args.clients)
        ]
        probes: dict[str, Any] = {}

        async def probe(name: str, start_s: float, work: Any) -> None:
            if start_s >= 0:
                await asyncio.sleep(max(0.0, t0 + start_s - time.monotonic()))
                probes[name] = await work()

        # While the load runs: a proxy may re-read shared state only when requests arrive.
        watchers = asyncio.gather(
            probe("label", args.label_at, lambda: label_probe(session, proxies)),
            probe(
                "mode",
                args.mode_at,
                lambda: mode_probe(session, proxies, args.admin_key, args.new_mode),
            ),
        )
        await asyncio.gather(*clients)
        elapsed = time.monotonic() - t0
        await watchers
        # The rows of the last answers are written behind them: let the writers' batches go.
        await asyncio.sleep(args.settle)
        counters = {p: await metrics(session, p) for p in proxies}
    if HEALTHZ_MS:
        probes["healthz_ms_p50"] = statistics.median(HEALTHZ_MS)
    return {"tally": asdict(tally), "elapsed_s": elapsed, "probes": probes, "metrics": counters}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--balancer", required=True, help="base URL, e.g. http://10.77.0.9:8080")
    parser.add_argument("--proxies", required=True, help="comma-separated proxy base URLs")
    parser.add_argument("--key", required=True)
    parser.add_argument("--admin-key", required=True, help="the proxies' CRABBOT_PROXY_ADMIN_KEY")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--label-at", type=float, default=-1.0)
    parser.add_argument("--mode-at", type=float, default=-1.0)
    parser.add_argument("--new-mode", default="live")
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
