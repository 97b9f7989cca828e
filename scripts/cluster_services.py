"""What runs on the cluster's hosts besides PostgreSQL: the fake upstream, the `crabbot proxy`
processes (each with its own config file and environment, all on one database) and HAProxy,
configured from config/haproxy.example.cfg with this run's addresses."""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_proxy import free_port
from cluster_hosts import Cluster, ClusterError, Host, Process
from cluster_upstream import READY

ROOT = Path(__file__).resolve().parents[1]
HAPROXY_EXAMPLE = ROOT / "config" / "haproxy.example.cfg"
UPSTREAM_PORT = 9000
PROXY_PORT = 8888
BALANCER_PORT = 8080
FIRST_START_LIMIT_S = 900.0  # the first proxy seeds the pool (embeds it) on a new database
START_LIMIT_S = 300.0
PROVIDER_KEY = "cluster-provider-key"


def start_upstream(cluster: Cluster, host: Host, url: str) -> Process:
    port = url.rsplit(":", 1)[1]
    process = cluster.start(
        "upstream",
        host,
        [
            *(sys.executable, str(ROOT / "scripts" / "cluster_upstream.py")),
            *("--host", host.address, "--port", port),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT / "scripts")},
        ready=READY,
    )
    process.wait_ready(60.0)
    return process


def proxy_config(database: str, host: Host, port: int, upstream: str, seed: bool) -> str:
    """One proxy's config file: its own address; the shared database (an SQLite path here, a
    PostgreSQL URL through CRABBOT_DATABASE_URL); the fake provider and categorizer."""
    lines = []
    if not database.startswith("postgresql://"):
        lines += ["[database]", f'path = "{database}"']
    lines += [
        "[routing]",
        'mode = "shadow"',
        "[pool]",
        f"seed = {'true' if seed else 'false'}",
        "trusted_after = 0  # the probe's label is learned at once, whatever the pool says",
        "[categorizer]",
        f'base_url = "{upstream}"',
        "[proxy]",
        f'host = "{host.address}"',
        f"port = {port}",
        f'base_url = "{upstream}/v1"',
        "max_connections = 1024",
    ]
    return "\n".join(lines) + "\n"


def proxy_env(
    database: str, keys: tuple[str, str], threads: int, data_home: Path
) -> dict[str, str]:
    """One proxy's environment: the client and admin keys, the provider's and categorizer's."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "CRABBOT_PROXY_KEYS": f"bench:{keys[0]}",
        "CRABBOT_PROXY_ADMIN_KEY": keys[1],
        "OPENAI_API_KEY": PROVIDER_KEY,
        "GROQ_API_KEY": "cluster-categorizer-key",
        "OMP_NUM_THREADS": str(threads),
        # Nothing goes to the user's own data folder, whatever the config leaves unset.
        "XDG_DATA_HOME": str(data_home),
    }
    env.pop("OPENAI_BASE_URL", None)
    if database.startswith("postgresql://"):
        env["CRABBOT_DATABASE_URL"] = database
    return env


def start_proxies(
    cluster: Cluster,
    hosts: list[Host],
    database: str,
    upstream: str,
    keys: tuple[str, str],
    args: argparse.Namespace,
) -> list[tuple[str, Process]]:
    """Every proxy, ready: the first alone (it migrates and seeds a new database), then the rest
    at once. Returns (base URL, process) pairs."""
    threads = max(1, (os.cpu_count() or 1) // len(hosts))
    started: list[tuple[str, Process]] = []
    for n, host in enumerate(hosts):
        port = PROXY_PORT if cluster.use_netns else free_port()
        config = cluster.workdir / f"{host.role}.toml"
        config.write_text(
            proxy_config(database, host, port, upstream, not args.no_seed), encoding="utf-8"
        )
        home = cluster.workdir / f"{host.role}-data"
        home.mkdir()
        process = cluster.start(
            host.role,
            host,
            [sys.executable, "-m", "bot.cli", "proxy", "--config", str(config)],
            env=proxy_env(database, keys, threads, home),
            ready="crabbot proxy on ",
            cwd=ROOT,
        )
        started.append((f"http://{host.address}:{port}", process))
        if n == 0:
            process.wait_ready(FIRST_START_LIMIT_S)
    with ThreadPoolExecutor(len(started)) as pool:
        list(pool.map(lambda item: item[1].wait_ready(START_LIMIT_S), started[1:]))
    return started


class Restarter(threading.Thread):
    """What systemd's Restart=always (RestartSec=`delay_s`) does for a killed proxy: started
    again `delay_s` after it died, and again each time it exits (PostgreSQL down at its start).
    At its start a proxy writes the rows its killed predecessor spooled."""

    REPLAYED = re.compile(r"routing log: (\d+) rows a stopped process left unwritten")

    def __init__(self, cluster: Cluster, killed: Process, delay_s: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.killed, self.delay_s, self.t0 = cluster, killed, delay_s, t0
        self.starts_s: list[float] = []  # each start, seconds into the run
        self.ready_s: float | None = None  # when the last start was serving
        self.replayed = 0  # rows the restarted proxies wrote from the spool
        self.ready = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.delay_s):
            name = f"{self.killed.name}-restart{len(self.starts_s) + 1}"
            process = self.cluster.restart(self.killed, name)
            self.starts_s.append(time.monotonic() - self.t0)
            try:
                process.wait_ready(START_LIMIT_S)
            except ClusterError:  # exited, or stopped at the end of the run
                self._count(process)
                continue
            self._count(process)
            self.ready_s = time.monotonic() - self.t0
            self.ready.set()
            while process.alive() and not self.done.wait(0.5):
                pass
            if self.done.is_set():
                return

    def _count(self, process: Process) -> None:
        self.replayed += sum(int(m[1]) for m in map(self.REPLAYED.search, process.lines) if m)

    def stop(self, wait_ready_s: float) -> None:
        """Wait (up to `wait_ready_s`) for the proxy to serve again, then stop restarting it."""
        self.ready.wait(wait_ready_s)
        self.done.set()


def balancer_config(bind: str, servers: list[str]) -> str:
    """config/haproxy.example.cfg with this run's bind address and one server line a proxy."""
    text = HAPROXY_EXAMPLE.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(\s*)bind \S+$", rf"\g<1>bind {bind}", text, count=1)
    text = re.sub(r"(?m)^\s*server .*\n", "", text)
    lines = [f"    server proxy{n + 1} {server} check" for n, server in enumerate(servers)]
    return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def start_balancer(
    cluster: Cluster, host: Host, proxies: list[tuple[str, Process]], use_netns: bool
) -> str:
    """HAProxy on `host`; its base URL."""
    port = BALANCER_PORT if use_netns else free_port()
    servers = [url.removeprefix("http://") for url, _ in proxies]
    config = cluster.workdir / "haproxy.cfg"
    config.write_text(balancer_config(f"{host.address}:{port}", servers), encoding="utf-8")
    cluster.start("haproxy", host, ["haproxy", "-db", "-f", str(config)])
    return f"http://{host.address}:{port}"
