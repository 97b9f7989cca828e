"""The proxy's own overhead: a fake provider that answers at once, called directly and through
`crabbot proxy` (a tier alias, and "auto" less its routing time), interleaved from one client and
then at 20 concurrent clients; prints medians, p95 and the overheads against issue 9's targets,
then "auto" decisions per second at 1, 20 and 50 clients against one embedder's ceiling.

    python scripts/bench_proxy.py [--db SEEDED.db] [--requests 300] [--clients 20] [--rounds 3]

Each of the three parties runs in its own process (fake provider, proxy, this client). The
overheads are measured with openai SDK clients (their cost is the same with and without the
proxy); the throughput with a raw HTTP load generator, which leaves the cores to the proxy as
clients on other machines would, then with SDK clients on this machine, for comparison. Without
--db a new database is seeded first (the proxy embeds the seed pool once, tens of seconds)."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_clients import ChatClient, MakeClient, RawClient, SdkClient

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [
    "Good morning everyone!",
    "Write a Python function that merges two sorted lists",
    "晚饭七点吃吗？",
    "SQLでユーザーごとの注文数を数えるクエリを書いて",
    "What is 30 degrees Celsius in Fahrenheit?",
    "帮我写一首关于秋天的短诗",
    "Compare renting and buying a flat in Berlin",
    "thanks, that worked!",
]
CONFIG = """
[routing]
mode = "live"
[categorizer]
enabled = false
[proxy]
max_retries = 0
"""


# The three scenarios and the model each asks for: the fake provider directly, and the proxy.
SCENARIOS = {"direct": "gpt-4.1-nano", "alias": "cheap", "auto": "auto"}
WARMUP = 30  # rounds not counted: connections, caches
# Issue 9's targets for the proxy's own overhead (medians, one client).
ALIAS_TARGET_MS = 1.0
AUTO_TARGET_MS = 2.0
THROUGHPUT_CLIENTS = (1, 20, 50)
THROUGHPUT_TARGET = 0.8  # of one embedder's ceiling


@dataclass
class Sample:
    total_ms: list[float] = field(default_factory=list)
    routing_ms: list[float] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def wait_healthy(url: str, process: subprocess.Popen[bytes], limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit("the proxy exited before it was ready (see its stderr above)")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise SystemExit(f"the proxy was not ready after {limit_s:.0f} s")


async def one_request(client: ChatClient, model: str, text: str, sample: Sample) -> None:
    reply = await client.chat(model, text)
    sample.total_ms.append(reply.total_ms)
    if reply.routing_ms is not None:
        sample.routing_ms.append(reply.routing_ms)


async def interleaved(provider_url: str, proxy_url: str, requests: int) -> dict[str, Sample]:
    """One client: each round sends one request direct, one with a tier alias and one with
    "auto", so all three see the same machine."""
    samples = {name: Sample() for name in SCENARIOS}
    direct, proxied = SdkClient(provider_url), SdkClient(proxy_url)
    clients = {"direct": direct, "alias": proxied, "auto": proxied}
    try:
        for turn in range(WARMUP + requests):
            text = f"{MESSAGES[turn % len(MESSAGES)]} #{turn}"
            # "auto" last, and direct and alias in turn first: each follows an embedding (whose
            # threads may still spin) equally often.
            for name in ("direct", "alias", "auto") if turn % 2 else ("alias", "direct", "auto"):
                sample = samples[name] if turn >= WARMUP else Sample()
                await one_request(clients[name], SCENARIOS[name], text, sample)
    finally:
        await direct.close()
        await proxied.close()
    return samples


async def concurrent(
    base_url: str,
    model: str,
    clients: int,
    requests: int,
    serial: Iterator[int],
    make_client: MakeClient = SdkClient,
) -> Sample:
    """`requests` chat completions spread over `clients` concurrent clients. Each text ends in
    the next number of `serial`, never sent before (the embedding cache would answer it), and
    as short as the interleaved run's numbers: the throughput's texts cost what the ceiling's
    did (a tag like "#rate1-0.12" adds 3 tokens, ~18%, to these messages)."""
    sample = Sample()
    per_client = max(1, requests // clients)

    async def one_client(number: int) -> None:
        client = make_client(base_url)
        try:
            for turn in range(per_client):
                text = MESSAGES[(number * per_client + turn) % len(MESSAGES)]
                await one_request(client, model, f"{text} #{next(serial)}", sample)
        finally:
            await client.close()

    await asyncio.gather(*(one_client(number) for number in range(clients)))
    return sample


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<34}{'-':>9}{'-':>9}"
    return f"  {label:<34}{statistics.median(values):>7.2f}ms{p95(values):>7.2f}ms"


def beyond_routing(auto: Sample) -> list[float]:
    # X-Crabbot-Routing-Ms is the router's decision latency; anything after it (the provider
    # call, the relay) counts as the proxy's own overhead.
    return [total - routing for total, routing in zip(auto.total_ms, auto.routing_ms, strict=True)]


def report(direct: Sample, alias: Sample, auto: Sample, targets: bool) -> None:
    beyond = beyond_routing(auto)
    print(row("direct to the fake provider", direct.total_ms))
    print(row('proxy, model "cheap" (tier alias)', alias.total_ms))
    print(row('proxy, model "auto"', auto.total_ms))
    print(row("  of which routing (X-Crabbot)", auto.routing_ms))
    print(row('  "auto" minus its routing time', beyond))
    base = statistics.median(direct.total_ms)
    alias_over = statistics.median(alias.total_ms) - base
    auto_over = statistics.median(beyond) - base
    if not targets:
        print(
            f"  overhead, median: alias {alias_over:+.2f} ms;"
            f" auto beyond routing {auto_over:+.2f} ms"
        )
        return
    for label, over, target in (
        ("tier alias over direct", alias_over, ALIAS_TARGET_MS),
        ('"auto" beyond routing over direct', auto_over, AUTO_TARGET_MS),
    ):
        verdict = "meets" if over <= target else "MISSES"
        print(f"  {label:<34}{over:>+7.2f}ms  target <= {target:+.1f} ms: {verdict}")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each process (all its threads; Linux's /proc), and of
    this client process; {} where /proc is not there."""
    ticks = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return {}
        seconds[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    times = os.times()
    seconds["client"] = times.user + times.system
    return seconds


async def bench(
    args: argparse.Namespace, provider_url: str, proxy_url: str, pids: dict[str, int]
) -> None:
    samples = await interleaved(provider_url, proxy_url, args.requests)
    print(f"\n1 client, interleaved, {args.requests} requests each{'':>8}median      p95")
    report(samples["direct"], samples["alias"], samples["auto"], targets=True)
    if args.clients <= 1:
        return
    serial = itertools.count(WARMUP + args.requests)  # the interleaved run's numbers end there
    runs = {}
    for name, model in SCENARIOS.items():
        url = provider_url if name == "direct" else proxy_url
        await concurrent(url, model, args.clients, min(40, args.requests), serial)
        runs[name] = await concurrent(url, model, args.clients, args.requests, serial)
    print(
        f"\n{args.clients} concurrent clients, one scenario after the other,"
        f" {len(runs['direct'].total_ms)} requests each"
    )
    report(runs["direct"], runs["alias"], runs["auto"], targets=False)
    await throughput(proxy_url, args.requests, args.rounds, serial, pids)


@dataclass
class Throughput:
    """One kind of client's "auto" runs at one number of clients, over the rounds."""

    rates: list[float] = field(default_factory=list)  # decisions per second, one a round
    sample: Sample = field(default_factory=Sample)  # every request of every round
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process, summed


async def throughput(
    proxy_url: str, requests: int, rounds: int, serial: Iterator[int], pids: dict[str, int]
) -> None:
    """Routed ("auto") decisions per second at 1, 20 and 50 concurrent clients, from the load
    generator and from SDK clients, in rounds that take turns (the machine is shared and its
    speed drifts), and where its CPU went meanwhile: the three processes share its cores. The
    ceiling comes from the same rounds: the load generator's routing time at one client."""
    kinds: dict[str, MakeClient] = {RawClient.kind: RawClient, SdkClient.kind: SdkClient}
    runs = {(kind, clients): Throughput() for kind in kinds for clients in THROUGHPUT_CLIENTS}
    for _ in range(rounds):
        for (kind, clients), run in runs.items():
            before = cpu_seconds(pids)
            started = time.perf_counter()
            sample = await concurrent(proxy_url, "auto", clients, requests, serial, kinds[kind])
            elapsed = time.perf_counter() - started
            after = cpu_seconds(pids)
            run.rates.append(len(sample.total_ms) / elapsed)
            run.sample.total_ms += sample.total_ms
            run.sample.routing_ms += sample.routing_ms
            run.seconds += elapsed
            for name in after if before else ():
                run.cpu[name] = run.cpu.get(name, 0.0) + after[name] - before[name]
    routing = statistics.median(runs[RawClient.kind, 1].sample.routing_ms)
    ceiling = 1000.0 / routing
    print(
        f'\n"auto" throughput, {rounds} rounds of {requests} requests a run, the median round'
        f" [lowest-highest]; ceiling = one embedder busy all the time = 1000 / {routing:.2f} ms"
        f" (the median routing at one client, {RawClient.kind}) = {ceiling:.1f}/s;"
        f" target >= {THROUGHPUT_TARGET:.0%} of it"
    )
    for (kind, clients), run in runs.items():
        if clients == THROUGHPUT_CLIENTS[0]:
            print(f"  {kind} clients")
        rate = statistics.median(run.rates)
        verdict = "meets" if rate >= THROUGHPUT_TARGET * ceiling else "MISSES"
        total_ms = statistics.median(run.sample.total_ms)
        routing_ms = statistics.median(run.sample.routing_ms)
        print(
            f"  {clients:>5} clients  {rate:>6.1f}/s [{min(run.rates):.1f}-{max(run.rates):.1f}]"
            f" {rate / ceiling:>5.0%} {verdict:<6} (median {total_ms:.1f} ms a request, of which"
            f" routing {routing_ms:.1f} ms)"
        )
        if run.cpu:
            shares = "  ".join(f"{name} {cpu / run.seconds:.2f}" for name, cpu in run.cpu.items())
            print(f"{'':>9}CPU, cores busy on average: {shares} (of {os.cpu_count()})")
    print(
        "  One client waits for each answer before it asks again: its rate is 1000 / its request"
        " ms, so it reaches at most routing / request of the ceiling."
    )


@dataclass(frozen=True)
class BenchFiles:
    """A scratch folder with the proxy's database (a copy of a seeded one, else new) and config,
    and the environment the proxy and the fake provider run in (no Groq key)."""

    work: Path
    db: Path
    config: Path
    env: dict[str, str]


def bench_files(prefix: str, seeded: Path | None) -> BenchFiles:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    db = work / "crabbot.db"
    if seeded is not None:
        shutil.copyfile(seeded, db)
    config = work / "bench.toml"
    config.write_text(CONFIG)
    env = os.environ | {"PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "bench-provider-key"}
    env.pop("GROQ_API_KEY", None)
    return BenchFiles(work, db, config, env)


def start_provider(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """The fake provider in a process of its own, and its base URL once it serves."""
    provider = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "instant_provider.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
    )
    assert provider.stdout is not None
    return provider, provider.stdout.readline().decode().strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a seeded crabbot database to copy (saves seeding)")
    parser.add_argument("--requests", type=int, default=300, help="requests per scenario")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the throughput runs")
    parser.add_argument(
        "--clients", type=int, default=20, help="concurrent clients of the second run (1: none)"
    )
    args = parser.parse_args()

    files = bench_files("bench_proxy_", args.db)
    work, db, config, env = files.work, files.db, files.config, files.env
    provider, provider_url = start_provider(env)
    proxy: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        proxy = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bot.cli",
                "proxy",
                "--config",
                str(config),
                "--db",
                str(db),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env | {"OPENAI_BASE_URL": provider_url},
        )
        asyncio.run(wait_healthy(f"http://127.0.0.1:{port}/healthz", proxy, limit_s=300))
        print(
            f"fake provider {provider_url} · proxy http://127.0.0.1:{port}/v1 · "
            f"{os.cpu_count()} CPUs, all three processes on this machine"
        )
        pids = {"proxy": proxy.pid, "provider": provider.pid}
        asyncio.run(bench(args, provider_url, f"http://127.0.0.1:{port}/v1", pids))
    finally:
        for process in (proxy, provider):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
