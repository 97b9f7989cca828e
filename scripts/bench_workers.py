"""What `crabbot proxy --workers N` does for "auto" throughput: for each N, a proxy with N workers
in front of a fake provider that answers at once; the median routing time at one client, then
decisions per second at 1, 20 and 50 concurrent clients (each run a fixed time), against one
embedder's ceiling (1000 / the median routing ms of the one-worker proxy at one client). Every
run sends texts no run sent before, so the embedding cache never answers.

    python scripts/bench_workers.py [--db SEEDED.db] [--workers 1 2] [--seconds 10] [--rounds 3]
                                    [--client raw|sdk]

Everything runs on this machine (fake provider, proxy workers, this client), as a real
deployment's clients would not: the clients are a raw HTTP load generator, light on the shared
cores (--client sdk: openai SDK clients); `uptime` before and after says how busy it was.
Without --db a new database is seeded first (the first proxy embeds the seed pool once, tens of
seconds)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_clients import CLIENTS, ChatClient, MakeClient
from bench_proxy import MESSAGES, THROUGHPUT_CLIENTS, bench_files, free_port, start_provider

ROOT = Path(__file__).resolve().parents[1]
START_LIMIT_S = 600.0  # seeding a new database takes a while
WARMUP = 10  # requests before the routing time is measured
WARM_S = 2.0  # each throughput run's unmeasured start: every client connects, every worker warms
PROBE_REQUESTS = 200


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start_proxy(
    config: Path, db: Path, workers: int, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """The proxy, once its start-up line says every worker serves; its stderr is then relayed
    (a warning there belongs to the figures)."""
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "bot.cli", "proxy", "--config", str(config)),
            *("--db", str(db), "--port", str(free_port()), "--workers", str(workers)),
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        line = process.stderr.readline().decode()
        if not line:
            raise SystemExit(f"the proxy stopped before it was ready (exit {process.wait()})")
        if line.startswith("crabbot proxy on "):
            threading.Thread(
                target=shutil.copyfileobj, args=(process.stderr, sys.stderr.buffer), daemon=True
            ).start()
            return process, line
        sys.stderr.write(line)
    raise SystemExit(f"the proxy was not ready after {START_LIMIT_S:.0f} s")


async def ask(client: ChatClient, text: str) -> float:
    """One "auto" request; its routing ms (X-Crabbot-Routing-Ms)."""
    routing = (await client.chat("auto", text)).routing_ms
    assert routing is not None, "an auto request always says its routing time"
    return routing


async def routing_ms(url: str, make_client: MakeClient, seconds: float, tag: str) -> float:
    """Median routing ms of one client's requests, one after the other, for `seconds` (at most
    PROBE_REQUESTS) after a warm-up."""
    sample: list[float] = []
    client = make_client(url)
    try:
        for turn in range(WARMUP):
            await ask(client, f"{MESSAGES[turn % len(MESSAGES)]} #{tag}warm{turn}")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(sample) < PROBE_REQUESTS:
            text = f"{MESSAGES[len(sample) % len(MESSAGES)]} #{tag}{len(sample)}"
            sample.append(await ask(client, text))
    finally:
        await client.close()
    return statistics.median(sample)


async def rate(clients: list[ChatClient], seconds: float, tag: str) -> float:
    """Decisions per second of the clients at once, each sending one request after the other
    (on a connection of its own) for `seconds`; the requests under way then are waited for and
    counted."""
    done = 0
    deadline = time.monotonic() + seconds

    async def one_client(number: int, client: ChatClient) -> None:
        nonlocal done
        turn = 0
        while time.monotonic() < deadline:
            await ask(client, f"{MESSAGES[(number + turn) % len(MESSAGES)]} #{tag}{number}.{turn}")
            done += 1
            turn += 1

    started = time.monotonic()
    await asyncio.gather(*(one_client(number, client) for number, client in enumerate(clients)))
    return done / (time.monotonic() - started)


async def timed_rate(
    url: str, make_client: MakeClient, clients: int, seconds: float, tag: str
) -> float:
    """`rate` for `clients` new clients, made (an SDK client makes an SSL context, costly) and
    connected by a warm-up run before the clock starts."""
    made = [make_client(url) for _ in range(clients)]
    try:
        await rate(made, WARM_S, f"{tag}warm-")
        return await rate(made, seconds, tag)
    finally:
        for client in made:
            await client.close()


Figures = dict[int, dict[str, list[float]]]  # workers -> "routing ms" or clients -> per round


async def measure(
    urls: dict[int, str], make_client: MakeClient, seconds: float, rounds: int
) -> Figures:
    """Each round: the median routing ms at one client, then decisions per second at each number
    of clients, the proxies taking turns at every step in alternating order, so a change in the
    machine's load from other programs falls on all of them alike."""
    figures: Figures = {n: {} for n in urls}
    order = list(urls)
    for number in range(rounds):
        for n in order:
            median = await routing_ms(urls[n], make_client, seconds, f"r{number}w{n}-one-")
            figures[n].setdefault("routing ms", []).append(median)
        for clients in THROUGHPUT_CLIENTS:
            order.reverse()
            for n in order:
                figures[n].setdefault(str(clients), []).append(
                    await timed_rate(
                        urls[n], make_client, clients, seconds, f"r{number}w{n}c{clients}-"
                    )
                )
    return figures


def report(figures: Figures, client: str, seconds: float, before: str, after: str) -> None:
    routing = statistics.median(figures[1]["routing ms"])
    ceiling = 1000.0 / routing
    rounds = len(figures[1]["routing ms"])
    print(f"\n{os.cpu_count()} CPUs; load before: {before}\n{'':>14}after:  {after}")
    print(
        f'"auto" decisions per second ({client} clients), {rounds} rounds of {seconds:.0f} s runs:'
        " the median round (the lowest and highest in brackets), against the ceiling of one"
        f" embedder busy all the time = 1000 / {routing:.1f} ms (one worker's median routing at"
        f" one client) = {ceiling:.1f}/s"
    )
    header = "".join(f"{f'{clients} clients':>26}" for clients in THROUGHPUT_CLIENTS)
    print(f"  {'':<10}{'routing ms':>18}{header}")
    for workers, values in figures.items():
        ms = values["routing ms"]
        cells = f"{statistics.median(ms):>7.1f} [{min(ms):.0f}-{max(ms):.0f}]"
        for clients in THROUGHPUT_CLIENTS:
            rates = values[str(clients)]
            middle = statistics.median(rates)
            cells += (
                f"{middle:>9.1f}/s {middle / ceiling:>4.0%} [{min(rates):.1f}-{max(rates):.1f}]"
            )
        print(f"  {f'{workers} worker' + ('s' if workers > 1 else ''):<10}{cells:>18}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a seeded crabbot database to copy (saves seeding)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="N to compare")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every run (3)")
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="raw",
        help="raw: an aiohttp load generator (default); sdk: openai SDK clients, ~10x its CPU",
    )
    args = parser.parse_args()
    if args.workers[0] != 1:
        parser.error("--workers must start with 1: its routing time is the ceiling's measure")

    files = bench_files("bench_workers_", args.db)
    work, db, config, env = files.work, files.db, files.config, files.env
    env.pop("OMP_NUM_THREADS", None)  # the proxy decides its workers' share of the cores
    provider, provider_url = start_provider(env)
    proxies: list[subprocess.Popen[bytes]] = []
    try:
        urls = {}
        for workers in args.workers:  # one after the other: the first seeds a new database
            proxy, line = start_proxy(config, db, workers, env | {"OPENAI_BASE_URL": provider_url})
            proxies.append(proxy)
            print(line.strip(), flush=True)
            urls[workers] = line.split()[3]
        before = uptime()
        figures = asyncio.run(measure(urls, CLIENTS[args.client], args.seconds, args.rounds))
        after = uptime()
    finally:
        for process in (*proxies, provider):
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    report(figures, args.client, args.seconds, before, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
