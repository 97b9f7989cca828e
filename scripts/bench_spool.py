"""What the routing log's crash spool costs a request: `LogWriter.put` of a real routing-log row
with and without the spool (one JSON line appended to a local file), medians and p99 side by
side in one run, for a short and a long (capped, 2,000-character) prompt; and what leaving the
spool costs per committed batch.

    python scripts/bench_spool.py [--rows 2000] [--rounds 15] [--dir /path/on/the/data/disk]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from router.decision import RoutingDecision
from router.store.log_writer import LogWriter
from router.store.routing_log import INSERT_SQL, row_of
from router.store.spool import Spool

SHORT = "Write a Python function that removes duplicates from a list but keeps the order"
LONG = ("Explain this stack trace and how to fix it: " + "x" * 60 + "\n") * 19


def a_row(text: str) -> tuple[object, ...]:
    decision = RoutingDecision(
        mode="live",
        category="coding",
        tier="strong",
        tier_mapping_version="v2",
        confidence=0.93,
        source="knn",
        model="gpt-4.1",
        latency_ms=3.2,
    )
    decision.text, decision.conv_key, decision.at = text, "telegram:12345", time.time()
    decision.outcome = "completed"
    decision.prompt_tokens, decision.completion_tokens = 41, 380
    return row_of(decision)


def put_ns(writer: LogWriter, row: tuple[object, ...], rows: int) -> list[float]:
    """Nanoseconds per put, for one round; then the round's rows leave as a commit would."""
    times = []
    for _ in range(rows):
        started = time.perf_counter_ns()
        writer.put(row)
        times.append(time.perf_counter_ns() - started)
    writer._pending.clear()  # noqa: SLF001 - the commit this bench leaves out
    if writer.spool is not None:
        writer.spool.committed(rows)
    return times


def leave_ns(spool: Spool, row: tuple[object, ...], batch: int, rounds: int) -> list[float]:
    """Nanoseconds of `committed(batch)`: half the time with rows still waiting (a new file,
    the old removed), half with none (the file emptied)."""
    times = []
    for n in range(rounds):
        for _ in range(batch * 2 if n % 2 else batch):
            spool.append(row)
        started = time.perf_counter_ns()
        spool.committed(batch)
        times.append(time.perf_counter_ns() - started)
        spool.committed(batch if n % 2 else 0)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return f"p50 {statistics.median(times) / 1000:6.2f} us  p99 {p99 / 1000:6.2f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="puts per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--dir", type=Path, help="where the spool goes (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        print(f"put() of one routing-log row, {args.rounds} x {args.rows} rows, spool in {work}")
        for name, text in (("short prompt", SHORT), ("2,000-char prompt", LONG)):
            row = a_row(text)
            plain = LogWriter(INSERT_SQL, Counter(), max_pending=args.rows + 1)
            spooled = LogWriter(INSERT_SQL, Counter(), max_pending=args.rows + 1)
            spooled.spool = Spool(Path(work) / name.replace(" ", "-"), Counter())
            assert spooled.spool.open()
            results: dict[str, list[float]] = {"without": [], "with": []}
            for _ in range(args.rounds):  # interleaved, so a slow moment hits both
                results["without"] += put_ns(plain, row, args.rows)
                results["with"] += put_ns(spooled, row, args.rows)
            without, with_spool = (statistics.median(results[k]) for k in ("without", "with"))
            print(
                f"  {name:18} without spool {summary(results['without'])}  |  with spool"
                f" {summary(results['with'])}  |  spool adds {(with_spool - without) / 1000:.2f} us"
            )
            leaving = leave_ns(spooled.spool, row, 256, 200)
            print(f"  {'':18} a committed batch of 256 leaving the spool: {summary(leaving)}")
            spooled.spool.close()


if __name__ == "__main__":
    main()
