"""What `crabbot proxy --workers N` does for "auto" throughput: for each N, a proxy with N workers
in front of a fake provider that answers at once; the median routing time at one client, then
decisions per second at 1, 20 and 50 concurrent clients (each run a fixed time), against one
embedder's ceiling (1000 / the median routing ms of the one-worker proxy at one client). Every
run sends texts no run sent before, so the embedding cache never answers.

    python scripts/bench_workers.py [--db SEEDED.db] [--workers 1 2] [--seconds 10]

Everything runs on this machine (fake provider, proxy workers, this client), as a real
deployment's clients would not; `uptime` before and after says how busy it was. Without --db a
new database is seeded first (the first proxy embeds the seed pool once, tens of seconds)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_proxy import CONFIG, FAKE_PROVIDER, MESSAGES, THROUGHPUT_CLIENTS, free_port
from openai import AsyncOpenAI

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


async def ask(client: AsyncOpenAI, text: str) -> float:
    """One "auto" request; its routing ms (X-Crabbot-Routing-Ms)."""
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": text}]
    )
    raw.parse()
    return float(raw.headers["x-crabbot-routing-ms"])


async def routing_ms(url: str, seconds: float, tag: str) -> float:
    """Median routing ms of one client's requests, one after the other, for `seconds` (at most
    PROBE_REQUESTS) after a warm-up."""
    sample: list[float] = []
    async with AsyncOpenAI(base_url=url, api_key="bench", max_retries=0) as client:
        for turn in range(WARMUP):
            await ask(client, f"{MESSAGES[turn % len(MESSAGES)]} #{tag}warm{turn}")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(sample) < PROBE_REQUESTS:
            text = f"{MESSAGES[len(sample) % len(MESSAGES)]} #{tag}{len(sample)}"
            sample.append(await ask(client, text))
    return statistics.median(sample)


async def rate(url: str, clients: int, seconds: float, tag: str) -> float:
    """Decisions per second of `clients` concurrent clients, each sending one request after the
    other (a connection of its own) for `seconds`."""
    done = 0
    deadline = time.monotonic() + seconds

    async def one_client(number: int) -> None:
        nonlocal done
        async with AsyncOpenAI(base_url=url, api_key="bench", max_retries=0) as client:
            turn = 0
            while time.monotonic() < deadline:
                await ask(
                    client, f"{MESSAGES[(number + turn) % len(MESSAGES)]} #{tag}{number}.{turn}"
                )
                done += 1
                turn += 1

    started = time.monotonic()
    await asyncio.gather(*(one_client(number) for number in range(clients)))
    return done / (time.monotonic() - started)


Results = dict[int, tuple[float, dict[int, float]]]


async def measure(urls: dict[int, str], seconds: float) -> Results:
    """{workers: (median routing ms at one client, {clients: decisions per second})}. The
    proxies take turns at each step, in alternating order, so a change in the machine's load
    from other programs falls on all of them alike."""
    medians = {n: await routing_ms(url, seconds, f"w{n}-one-") for n, url in urls.items()}
    rates: dict[int, dict[int, float]] = {n: {} for n in urls}
    for step, clients in enumerate(THROUGHPUT_CLIENTS):
        for n in list(urls) if step % 2 else list(reversed(urls)):
            await rate(urls[n], clients, WARM_S, f"w{n}-warm{clients}-")  # connections, threads
            rates[n][clients] = await rate(urls[n], clients, seconds, f"w{n}-rate{clients}-")
    return {n: (medians[n], rates[n]) for n in urls}


def report(results: Results, seconds: float, before: str, after: str) -> None:
    ceiling = 1000.0 / results[1][0]
    print(f"\n{os.cpu_count()} CPUs; load before: {before}\n{'':>14}after:  {after}")
    print(
        f'"auto" decisions per second, runs of {seconds:.0f} s; ceiling = one embedder busy all'
        f" the time = 1000 / {results[1][0]:.2f} ms = {ceiling:.1f}/s"
    )
    header = "".join(f"{f'{clients} clients':>20}" for clients in THROUGHPUT_CLIENTS)
    print(f"  {'':<11}{'routing ms':>11}{header}")
    for workers, (median, rates) in results.items():
        cells = "".join(
            f"{rates[clients]:>11.1f}/s {rates[clients] / ceiling:>5.0%}"
            for clients in THROUGHPUT_CLIENTS
        )
        print(f"  {f'{workers} worker' + ('s' if workers > 1 else ''):<11}{median:>11.2f}{cells}")
    print("  routing ms: the median at one client; %: of the one-embedder ceiling")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a seeded crabbot database to copy (saves seeding)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="N to compare")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run (10)")
    args = parser.parse_args()
    if args.workers[0] != 1:
        parser.error("--workers must start with 1: its routing time is the ceiling's measure")

    work = Path(tempfile.mkdtemp(prefix="bench_workers_"))
    db = work / "crabbot.db"
    if args.db is not None:
        shutil.copyfile(args.db, db)
    config = work / "bench.toml"
    config.write_text(CONFIG)
    env = os.environ | {"PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "bench-provider-key"}
    env.pop("GROQ_API_KEY", None)
    env.pop("OMP_NUM_THREADS", None)  # the proxy decides its workers' share of the cores
    provider = subprocess.Popen(
        [sys.executable, "-c", FAKE_PROVIDER], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    proxies: list[subprocess.Popen[bytes]] = []
    try:
        assert provider.stdout is not None
        provider_url = provider.stdout.readline().decode().strip()
        urls = {}
        for workers in args.workers:  # one after the other: the first seeds a new database
            proxy, line = start_proxy(config, db, workers, env | {"OPENAI_BASE_URL": provider_url})
            proxies.append(proxy)
            print(line.strip(), flush=True)
            urls[workers] = line.split()[3]
        before = uptime()
        results = asyncio.run(measure(urls, args.seconds))
        after = uptime()
    finally:
        for process in (*proxies, provider):
            process.terminate()
            process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    report(results, args.seconds, before, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
