"""crabbot as a cluster on this machine: hosts as network namespaces (PostgreSQL 15 on one, N
`crabbot proxy` processes on others, HAProxy in front, a fake upstream and a client host), 200
clients for 60 s against the balancer, one proxy killed (SIGKILL) at 20 s, at the first moment
its routing log has rows waiting for their batch, and started again 3 s later (as systemd's
Restart=always would: it writes the rows its killed predecessor spooled), and PostgreSQL
restarted at 40 s. Prints requests sent / answered / failed / hung, routing-log rows against
answered requests, p50/p95, and how long a mode change and a learned label took to reach every
proxy.

    python scripts/bench_cluster.py                      # PostgreSQL across namespaces (root)
    python scripts/bench_cluster.py --seconds 15 --clients 50 --proxies 2
    python scripts/bench_cluster.py --database sqlite    # one host, one SQLite file (no netns)

Every process, namespace and temporary folder it made is removed at the end, on Ctrl-C and on
an error. Everything shares this machine's cores, as real hosts would not: the proxies get
OMP_NUM_THREADS = cores / proxies."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from bench_proxy import free_port
from cluster_hosts import Cluster, ClusterError, Host, Process, netns_unavailable
from cluster_pg import PostgresServer
from cluster_report import print_report
from cluster_services import (
    UPSTREAM_PORT,
    Restarter,
    start_balancer,
    start_proxies,
    start_upstream,
)

ROOT = Path(__file__).resolve().parents[1]
SETTLE_LIMIT_S = 90.0  # after the load, each answer's row is awaited this long at most
RESTARTED_LIMIT_S = 300.0  # after the load, the restarted proxy's start is awaited this long
KILL_WAIT_S = 5.0  # the kill waits this long at most for rows waiting in the victim's spool


def postgres_supported() -> str | None:
    """Why this crabbot cannot use PostgreSQL yet, else None."""
    from router.config import DatabaseSettings

    if "url" not in DatabaseSettings.model_fields:
        return "this crabbot has no PostgreSQL storage yet ([database] url is not a setting)"
    return None


def count_rows(database: str, pg: PostgresServer | None) -> dict[str, int]:
    """The routing log's rows by outcome ("none" for a row written open and never closed)."""
    query = "SELECT coalesce(outcome, 'none'), count(*) FROM routing_log GROUP BY 1"
    if pg is not None:
        out = pg.sql(query, database="crabbot")
        return {k: int(v) for k, v in (line.split("|") for line in out.splitlines() if line)}
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        return {str(k): int(v) for k, v in conn.execute(query).fetchall()}


def decision_outcomes(database: str, pg: PostgresServer | None) -> dict[str, str]:
    """Each routing-log row's decision id and outcome ("none": written open, never closed)."""
    query = "SELECT decision_id, coalesce(outcome, 'none') FROM routing_log"
    query += " WHERE decision_id IS NOT NULL"
    if pg is not None:
        out = pg.sql(query, database="crabbot")
        return dict(line.split("|", 1) for line in out.splitlines() if line)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as conn:
        return {str(k): str(v) for k, v in conn.execute(query).fetchall()}


def answered_decisions(result: dict[str, Any]) -> dict[str, list[str]]:
    """Each proxy's answered requests, by decision id (the label probe's as proxy1's)."""
    answered = {k: list(v) for k, v in result["tally"].pop("decisions").items()}
    probe = result["probes"].get("label", {}).get("request", {}).get("decision")
    if probe:
        answered.setdefault("proxy1", []).append(probe)
    return answered


def settled_outcomes(
    database: str, pg: PostgresServer | None, wanted: set[str], since: float
) -> tuple[dict[str, str], float, bool]:
    """The rows' outcomes once each `wanted` decision has its closed row, or SETTLE_LIMIT_S
    after `since` (the load's end); the seconds from `since`, and whether every row came. A
    writer backing off after the database's restart may still hold rows: quiet for a moment
    is not proof it holds none."""
    while True:
        outcomes = decision_outcomes(database, pg)
        waiting = sum(1 for d in wanted if outcomes.get(d, "none") == "none")
        waited = time.monotonic() - since
        if not waiting or waited >= SETTLE_LIMIT_S:
            return outcomes, waited, not waiting
        time.sleep(0.5)  # another process writes them: nothing here can be awaited


def awaited_rows(answered: dict[str, list[str]], faults: dict[str, Any]) -> set[str]:
    """The decisions whose rows can come: not a killed proxy's when nothing started it again
    (its spooled rows wait for its next start), nor an answer that named no decision."""
    killed = faults.get("kill", {}).get("proxy")
    replayed = faults.get("restart", {}).get("ready_s") is not None
    return {
        decision
        for proxy, decisions in answered.items()
        if proxy != killed or replayed
        for decision in decisions
        if decision
    }


def rows_of_answers(answered: dict[str, list[str]], outcomes: dict[str, str]) -> dict[str, Any]:
    """For each proxy, its answers and what the routing log holds of them."""
    found: dict[str, Any] = {}
    for proxy, decisions in sorted(answered.items()):
        by_outcome: dict[str, int] = {}
        for decision in decisions:
            outcome = outcomes.get(decision, "missing")
            by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
        found[proxy] = {"answered": len(decisions), "rows": by_outcome}
    return found


class ConnectionSampler(threading.Thread):
    """The crabbot database's client connections, read every second: the most seen at once."""

    def __init__(self, pg: PostgresServer) -> None:
        super().__init__(daemon=True)
        self.pg = pg
        self.most = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            self.most = max(self.most, self.pg.connections() or 0)


def spooled_rows(victim: Process, database: str, data_home: Path) -> int:
    """Rows the victim's routing log holds uncommitted: the lines of its spool files (named
    by its pid, beside the SQLite file or in its own data folder)."""
    pattern = f"{victim.popen.pid}-*.rows"  # `ip netns exec` execs the proxy: the same pid
    if database.startswith("postgresql://"):
        files = list(data_home.rglob(pattern))
    else:
        files = list(Path(database + "-spool").glob(pattern))
    lines = 0
    for path in files:
        with contextlib.suppress(OSError):
            lines += path.read_bytes().count(b"\n")
    return lines


def kill_with_rows_waiting(victim: Process, database: str, data_home: Path) -> int:
    """SIGKILL, at the first moment (within KILL_WAIT_S) the victim has rows waiting for their
    batch: the moment a write-behind log loses rows. Returns how many were waiting."""
    deadline = time.monotonic() + KILL_WAIT_S
    while (waiting := spooled_rows(victim, database, data_home)) == 0:
        if time.monotonic() > deadline:
            break
        time.sleep(0.002)
    victim.kill()
    return waiting


def load_average() -> str:
    """This machine's 1-minute load average: everything here shares its cores."""
    return Path("/proc/loadavg").read_text(encoding="utf-8").split()[0]


def wait_for_go(load: Process, limit_s: float) -> float:
    load.wait_ready(limit_s)
    return time.monotonic()


def at(t0: float, seconds: float) -> None:
    time.sleep(max(0.0, t0 + seconds - time.monotonic()))


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    use_netns = args.hosts == "netns"
    with Cluster(use_netns, keep_files=args.keep) as cluster:
        pg: PostgresServer | None = None
        if args.database == "postgresql":
            pg = PostgresServer(cluster, cluster.add_host("pg"), 5432 if use_netns else free_port())
            pg.start()
            database = pg.url
        else:
            database = str(cluster.workdir / "crabbot.db")
            if args.seeded_db:
                shutil.copyfile(args.seeded_db, database)
        up = cluster.add_host("up")
        upstream = f"http://{up.address}:{UPSTREAM_PORT if use_netns else free_port()}"
        start_upstream(cluster, up, upstream)
        hosts = [cluster.add_host(f"proxy{n + 1}") for n in range(args.proxies)]
        key, admin_key = secrets.token_hex(16), secrets.token_hex(16)
        proxies = start_proxies(cluster, hosts, database, upstream, (key, admin_key), args)
        balancer = start_balancer(cluster, cluster.add_host("lb"), proxies, use_netns)
        client: Host = cluster.add_host("client")
        load = cluster.start(
            "load",
            client,
            [
                *(sys.executable, str(ROOT / "scripts" / "cluster_load.py")),
                *("--balancer", balancer, "--proxies", ",".join(url for url, _ in proxies)),
                *("--key", key, "--admin-key", admin_key, "--clients", str(args.clients)),
                *("--seconds", str(args.seconds), "--timeout", str(args.timeout)),
                *("--label-at", str(args.label_at), "--mode-at", str(args.mode_at)),
            ],
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'scripts'}"},
            ready="go",
        )
        load_before = load_average()
        sampler = ConnectionSampler(pg) if pg is not None else None
        if sampler is not None:
            sampler.start()
        t0 = wait_for_go(load, 120.0)
        faults: dict[str, Any] = {}
        restarter: Restarter | None = None
        if args.kill_at >= 0 and len(proxies) > 1:
            at(t0, args.kill_at)
            victim = proxies[-1][1]
            waiting = kill_with_rows_waiting(
                victim, database, cluster.workdir / f"{victim.name}-data"
            )
            faults["kill"] = {
                "proxy": victim.name,
                "at_s": time.monotonic() - t0,
                "rows_waiting": waiting,
            }
            if args.restart_after >= 0:
                restarter = Restarter(cluster, victim, args.restart_after, t0)
                restarter.start()
        if pg is not None and args.restart_pg_at >= 0:
            at(t0, args.restart_pg_at)
            began = time.monotonic() - t0
            faults["pg_restart"] = {"at_s": began, "took_s": pg.restart()}
        load.popen.wait(args.seconds + args.timeout + 120)
        load_ended = time.monotonic()
        lines = [line for line in load.lines if line.startswith("{")]
        if load.popen.returncode != 0 or not lines:
            raise ClusterError("the load generator failed:\n" + "".join(load.lines[-20:]))
        result = json.loads(lines[-1])
        if restarter is not None:
            restarter.stop(RESTARTED_LIMIT_S)  # its spool written before the rows are counted
            restarter.join(5.0)
            faults["restart"] = {
                "starts_s": restarter.starts_s,
                "ready_s": restarter.ready_s,
                "replayed_rows": restarter.replayed,
            }
        result["faults"] = faults
        if pg is not None and sampler is not None:
            sampler.done.set()
            result["postgres"] = {
                "most_connections": sampler.most,
                "too_many_clients": pg.log_lines("too many clients"),
                "fatal_lines": pg.log_lines("FATAL"),
            }
        answered = answered_decisions(result)
        wanted = awaited_rows(answered, faults)
        outcomes, waited, complete = settled_outcomes(database, pg, wanted, load_ended)
        result["rows_awaited"] = {"seconds": waited, "all_came": complete}
        result["rows"] = count_rows(database, pg)
        result["answers"] = rows_of_answers(answered, outcomes)
        result["setup"] = {
            "load_before": load_before,
            "load_after": load_average(),
            "hosts": "network namespaces" if use_netns else "this machine (127.0.0.1)",
            "database": "PostgreSQL 15" if pg is not None else "SQLite (one file)",
            "proxies": [url for url, _ in proxies],
            "clients": args.clients,
            "seconds": args.seconds,
            "timeout_s": args.timeout,
            "workdir": str(cluster.workdir) if args.keep else None,
        }
        return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--proxies", type=int, default=3)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="a client's per-request limit")
    parser.add_argument("--kill-at", type=float, help="default: a third in; -1: no kill")
    parser.add_argument(
        "--restart-after",
        type=float,
        default=3.0,
        help="start the killed proxy again this many seconds after the kill; -1: never",
    )
    parser.add_argument("--restart-pg-at", type=float, help="default: two thirds in; -1: none")
    parser.add_argument("--label-at", type=float, help="default: a tenth in; -1: no probe")
    parser.add_argument("--mode-at", type=float, help="default: a fifth in; -1: no probe")
    parser.add_argument("--no-seed", action="store_true", help="an empty pool (a faster start)")
    parser.add_argument("--seeded-db", type=Path, help="SQLite: start from a copy of this file")
    parser.add_argument(
        "--hosts",
        choices=("netns", "local"),
        help="netns: each host a network namespace (the default with PostgreSQL); local: all on"
        " 127.0.0.1 (the default with SQLite; with netns, SQLite's one file is shared through"
        " this machine's filesystem, as real hosts could not)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs' folder")
    parser.add_argument("--json", action="store_true", help="the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.hosts is None:
        args.hosts = "netns" if args.database == "postgresql" else "local"
    shares = {"kill_at": 1 / 3, "restart_pg_at": 2 / 3, "label_at": 0.1, "mode_at": 0.2}
    for name, share in shares.items():
        if getattr(args, name) is None:
            setattr(args, name, round(args.seconds * share, 1))
    return args


def preflight(args: argparse.Namespace) -> str | None:
    """Why this run cannot happen here, else None."""
    if shutil.which("haproxy") is None:
        return "HAProxy is not installed (apt-get install -y haproxy)"
    if args.database == "postgresql" and (why := postgres_supported()) is not None:
        return why + "; --database sqlite runs on one host meanwhile"
    if args.hosts == "netns" and (why := netns_unavailable()) is not None:
        return why + " (--hosts local runs every host on 127.0.0.1)"
    return None


def _terminate(signum: int, _frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the cluster's teardown


def main() -> int:
    args = parse()
    if (why := preflight(args)) is not None:
        print(f"bench_cluster: {why}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C unwinds through the teardown even when started with SIGINT ignored (a shell's `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = run_bench(args)
    except ClusterError as error:
        print(f"bench_cluster: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_cluster: interrupted; every host and process removed", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
