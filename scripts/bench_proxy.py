"""The proxy's own overhead: a fake provider that answers at once, called directly and through
`crabbot proxy` (model "auto" and a tier alias), at 1 and 20 concurrent clients; prints figures.

    python scripts/bench_proxy.py [--db SEEDED.db] [--requests 200]

Each of the three parties runs in its own process (fake provider, proxy, this client). Without
--db a new database is seeded first (the proxy embeds the seed pool once, tens of seconds)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from openai import AsyncOpenAI

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
FAKE_PROVIDER = """
import asyncio, sys
from tests.fakes.openai_provider import FakeProvider
async def main() -> None:
    provider = await FakeProvider(record=False).start()
    print(provider.base_url, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""
CONFIG = """
[routing]
mode = "live"
[categorizer]
enabled = false
[proxy]
max_retries = 0
"""


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


async def run(base_url: str, model: str, clients: int, requests: int) -> Sample:
    """`requests` chat completions spread over `clients` concurrent clients."""
    sample = Sample()
    per_client = max(1, requests // clients)

    async def one_client(number: int) -> None:
        async with AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0) as client:
            for turn in range(per_client):
                text = MESSAGES[(number * per_client + turn) % len(MESSAGES)]
                started = time.perf_counter()
                raw = await client.chat.completions.with_raw_response.create(
                    model=model, messages=[{"role": "user", "content": f"{text} #{turn}"}]
                )
                raw.parse()
                sample.total_ms.append((time.perf_counter() - started) * 1000)
                routing = raw.headers.get("x-crabbot-routing-ms")
                if routing is not None:
                    sample.routing_ms.append(float(routing))

    await asyncio.gather(*(one_client(number) for number in range(clients)))
    return sample


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<34}{'-':>9}{'-':>9}"
    return f"  {label:<34}{statistics.median(values):>7.2f}ms{p95(values):>7.2f}ms"


async def bench(args: argparse.Namespace, provider_url: str, proxy_url: str) -> None:
    for clients in (1, 20):
        for url, model in (
            (provider_url, "gpt-4.1-nano"),
            (proxy_url, "cheap"),
            (proxy_url, "auto"),
        ):
            await run(url, model, clients, min(40, args.requests))  # warm up connections
        direct = await run(provider_url, "gpt-4.1-nano", clients, args.requests)
        alias = await run(proxy_url, "cheap", clients, args.requests)
        auto = await run(proxy_url, "auto", clients, args.requests)
        beyond = [
            total - routing for total, routing in zip(auto.total_ms, auto.routing_ms, strict=True)
        ]
        print(
            f"\n{clients} concurrent client(s), {len(direct.total_ms)} requests each"
            f"{'':>4}median      p95"
        )
        print(row("direct to the fake provider", direct.total_ms))
        print(row('proxy, model "cheap" (no routing)', alias.total_ms))
        print(row('proxy, model "auto"', auto.total_ms))
        # X-Crabbot-Routing-Ms is the router's decision latency; writing the decision's log row
        # comes after it, so it counts here as the proxy's own overhead.
        print(row("  of which routing (X-Crabbot)", auto.routing_ms))
        print(row('  "auto" minus its routing time', beyond))
        base = statistics.median(direct.total_ms)
        print(
            f"  overhead, median: alias {statistics.median(alias.total_ms) - base:+.2f} ms;"
            f" auto beyond routing {statistics.median(beyond) - base:+.2f} ms"
            f" (routing itself {statistics.median(auto.routing_ms):.2f} ms)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a seeded crabbot database to copy (saves seeding)")
    parser.add_argument("--requests", type=int, default=200, help="requests per scenario")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_proxy_"))
    db = work / "crabbot.db"
    if args.db is not None:
        shutil.copyfile(args.db, db)
    config = work / "bench.toml"
    config.write_text(CONFIG)
    env = os.environ | {"PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "bench-provider-key"}
    env.pop("GROQ_API_KEY", None)
    provider = subprocess.Popen(
        [sys.executable, "-c", FAKE_PROVIDER], cwd=ROOT, env=env, stdout=subprocess.PIPE
    )
    proxy: subprocess.Popen[bytes] | None = None
    try:
        assert provider.stdout is not None
        provider_url = provider.stdout.readline().decode().strip()
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
        asyncio.run(bench(args, provider_url, f"http://127.0.0.1:{port}/v1"))
    finally:
        for process in (proxy, provider):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
