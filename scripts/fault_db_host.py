"""The database host drops off the network: PostgreSQL 15 on one host (a network namespace),
crabbot's store (router/store/postgres.py) on another; the link between them is cut, as a
partition or a power cut would (no reset: packets vanish). Prints how a query on a pooled
connection ended, then a query that needs a new connection, then one after the link is back.
Without a bound such a query waits for TCP to give up retransmitting (about 15 minutes), and a
bot's reply with it.

    python scripts/fault_db_host.py          # needs root, `ip netns` and PostgreSQL 15
    python scripts/fault_db_host.py --json   # the figures as one JSON line

Every namespace, process and folder it made is removed at the end, on Ctrl-C and on an error."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from cluster_hosts import Cluster, ClusterError, netns_unavailable
from cluster_pg import PostgresServer, bindir

ROOT = Path(__file__).resolve().parents[1]
HUNG_S = 120.0  # a query still waiting after this long is reported as hung
READY = "probe ready"
STEPS = ("pooled_query", "new_connection", "after_the_link_is_back")


async def timed_query(db: Any) -> dict[str, Any]:
    """`SELECT 1` on `db`: how it ended ("ok", the error's type, or "hung") and its seconds."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(db.fetch_all("SELECT 1"), HUNG_S)
        outcome = "ok"
    except TimeoutError:
        outcome = "hung"  # the watchdog's, not the store's: the store's own errors are its types
    except Exception as error:  # noqa: BLE001 - what the caller would see is the figure
        outcome = type(error).__name__
    return {"outcome": outcome, "seconds": round(time.monotonic() - started, 1)}


async def probe(url: str, signals: Path) -> None:
    """On the client host: one query to warm the pool, then one per step, each after the file
    the harness creates for it ("<step>.go")."""
    sys.path.insert(0, str(ROOT))
    from router.store.postgres import PostgresDatabase

    db = await PostgresDatabase.open(url, pool_size=1)
    try:
        await db.fetch_all("SELECT 1")
        print(READY, flush=True)
        for step in STEPS:
            go = signals / f"{step}.go"
            while not go.exists():  # the harness, another process, says when
                await asyncio.sleep(0.05)
            print(json.dumps({step: await timed_query(db)}), flush=True)
    finally:
        await asyncio.wait_for(db.close(), 30)


def wait_for_step(process: Any, step: str, limit_s: float) -> dict[str, Any]:
    """The probe's figure for `step`, once it prints it."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for line in process.lines:
            if line.startswith("{") and step in (found := json.loads(line)):
                return dict(found[step])
        if not process.alive():
            raise ClusterError(f"the probe exited:\n{''.join(process.lines[-15:])}")
        time.sleep(0.1)
    raise ClusterError(f"the probe gave no figure for {step} in {limit_s:.0f} s")


def run_fault() -> dict[str, Any]:
    with Cluster(True) as cluster:
        pg = PostgresServer(cluster, cluster.add_host("pg"), 5432)
        pg.start()
        client = cluster.add_host("client")
        signals = cluster.workdir / "signals"
        signals.mkdir()
        argv = [sys.executable, __file__, "--probe", pg.url, str(signals)]
        process = cluster.start("probe", client, argv, ready=READY, cwd=ROOT)
        process.wait_ready(60.0)
        cluster.set_link(pg.host, up=False)
        result: dict[str, Any] = {}
        for step in STEPS:
            if step == "after_the_link_is_back":
                cluster.set_link(pg.host, up=True)
            (signals / f"{step}.go").touch()
            result[step] = wait_for_step(process, step, HUNG_S + 30)
        return result


def report(result: dict[str, Any]) -> None:
    print("PostgreSQL's host cut off the network (link down: no reset, packets dropped)")
    for step in STEPS:
        figure = result[step]
        print(f"  {step.replace('_', ' ')}: {figure['outcome']} after {figure['seconds']} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="the figures as one JSON line")
    parser.add_argument("--probe", nargs=2, metavar=("URL", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        asyncio.run(probe(args.probe[0], Path(args.probe[1])))
        return 0
    why = netns_unavailable()
    if why is None:
        try:
            bindir()
        except ClusterError as error:
            why = str(error)
    if why is not None:
        print(f"fault_db_host: {why}", file=sys.stderr)
        return 2
    try:
        result = run_fault()
    except ClusterError as error:
        print(f"fault_db_host: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
