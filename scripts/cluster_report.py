"""The cluster benchmark's figures, printed: what the clients saw, the faults, the routing log's
rows against the answers, and how long shared state took to reach every proxy."""

from __future__ import annotations

import statistics
from typing import Any

BUCKET_S = 5


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {n}" for kind, n in sorted(counts.items())) or "none"


def _seconds(found: dict[str, float | str | None]) -> str:
    def shown(value: float | str | None) -> str:
        if value is None:
            return "-"
        return value if isinstance(value, str) else f"{value:.3f} s"

    return ", ".join(f"{proxy.removeprefix('http://')} {shown(s)}" for proxy, s in found.items())


def _every(found: dict[str, float | str | None], limit: str) -> str:
    """The slowest proxy's time, over the proxies that stayed up."""
    values = [v for v in found.values() if v != "down"]
    if len(values) == 1 and len(found) > 1:
        return "(only one proxy stayed up: nothing to compare)"
    if values and all(isinstance(v, float) for v in values):
        return f"{max(v for v in values if isinstance(v, float)):.3f} s"
    return f"not on every proxy within {limit}"


def timeline(tally: dict[str, Any]) -> str:
    buckets: dict[int, list[int]] = {}
    for second, (answered, failed, hung) in tally["timeline"].items():
        bucket = buckets.setdefault(int(second) // BUCKET_S * BUCKET_S, [0, 0, 0])
        bucket[0] += answered
        bucket[1] += failed
        bucket[2] += hung
    return "  ".join(f"{s}s:{a}/{f}/{h}" for s, (a, f, h) in sorted(buckets.items()))


def print_report(result: dict[str, Any]) -> None:
    setup, tally, rows = result["setup"], result["tally"], result["rows"]
    latencies = tally["latencies_ms"]
    failed = sum(tally["failed"].values())
    other = sum(tally["malformed"].values())
    print(
        f"cluster: {len(setup['proxies'])} proxies on {setup['hosts']}, {setup['database']},"
        f" HAProxy; {setup['clients']} clients for {setup['seconds']:.0f} s"
        f" (ran {result['elapsed_s']:.1f} s), client timeout {setup['timeout_s']:.0f} s"
    )
    print(
        f"requests: sent {tally['sent']}, answered {tally['answered']}, failed {failed}"
        f" (OpenAI-format errors: {_counts(tally['failed'])}), other failures {other}"
        f" ({_counts(tally['malformed'])}), cut mid-answer {_counts(tally['cut'])},"
        f" hung {tally['hung']}"
    )
    rate = tally["answered"] / result["elapsed_s"] if result["elapsed_s"] else 0.0
    print(
        f"latency of the answered: p50 {percentile(latencies, 0.5):.1f} ms,"
        f" p95 {percentile(latencies, 0.95):.1f} ms, mean"
        f" {statistics.fmean(latencies) if latencies else float('nan'):.1f} ms; {rate:.0f}/s"
    )
    routing = tally["routing_ms"]
    print(
        f"of which routing (X-Crabbot-Routing-Ms, its wait for the embedder included):"
        f" p50 {percentile(routing, 0.5):.1f} ms, p95 {percentile(routing, 0.95):.1f} ms"
    )
    print(f"answered/failed/hung by {BUCKET_S} s: {timeline(tally)}")
    faults = result["faults"]
    if "kill" in faults:
        kill = faults["kill"]
        waiting = kill.get("rows_waiting")
        spooled = "" if waiting is None else f", {waiting} rows in its spool (not yet committed)"
        print(f"fault: {kill['proxy']} killed (SIGKILL) at {kill['at_s']:.1f} s{spooled}")
    if "restart" in faults:
        again = faults["restart"]
        starts = ", ".join(f"{s:.1f}" for s in again["starts_s"]) or "-"
        ready = again["ready_s"]
        serving = f"serving at {ready:.1f} s" if ready is not None else "never serving"
        print(
            f"  started again (as Restart=always would) at {starts} s, {serving};"
            f" it wrote {again['replayed_rows']} rows its killed predecessor had spooled"
        )
    if "pg_restart" in faults:
        restart = faults["pg_restart"]
        print(
            f"fault: PostgreSQL restarted at {restart['at_s']:.1f} s"
            f" (down and back in {restart['took_s']:.2f} s)"
        )
    print(f"load average before / after: {setup['load_before']} / {setup['load_after']}")
    if "postgres" in result:
        pg = result["postgres"]
        print(
            f"PostgreSQL: at most {pg['most_connections']} connections to crabbot's database at"
            f" once (sampled each second); 'too many clients' {pg['too_many_clients']} times;"
            f" {pg['fatal_lines']} FATAL lines in its log (the restart's own included)"
        )
    probes = result["probes"]
    killed = faults.get("kill", {}).get("proxy")
    with_outcome = sum(n for outcome, n in rows.items() if outcome != "none")
    print(f"routing log: {with_outcome} rows with an outcome ({_counts(rows)})")
    answers = result["answers"].values()
    answered = sum(found["answered"] for found in answers)
    missing = sum(found["rows"].get("missing", 0) for found in answers)
    awaited = result["rows_awaited"]
    came = "every row awaited came" if awaited["all_came"] else "gave up waiting for the rest"
    print(
        f"answers with their routing-log row: {answered - missing} of {answered}"
        f" ({missing} missing; a decision id has one row: none twice); read"
        f" {awaited['seconds']:.1f} s after the load ended ({came})"
    )
    for proxy, found in result["answers"].items():
        note = " (killed)" if proxy == killed else ""
        rows_found = _counts(found["rows"])
        print(f"  answered by {proxy}{note}: {found['answered']}, their rows: {rows_found}")
    for proxy, counters in result["metrics"].items():
        if counters is None:
            print(f"  {proxy.removeprefix('http://')}: no /metrics (down)")
        else:
            named = ", ".join(
                f"{name.removeprefix('crabbot_').removesuffix('_total')} {value:.0f}"
                for name, value in counters.items()
            )
            print(f"  {proxy.removeprefix('http://')}: {named}")
    if "healthz_ms_p50" in probes:
        print(
            f"the probes read /healthz in {probes['healthz_ms_p50']:.0f} ms (median round trip)"
            " under this load: a time below is when the answer showing it came back"
        )
    if "mode" in probes:
        mode = probes["mode"]
        print(
            f"mode {mode['old']} -> {mode['new']} set on the first proxy (POST"
            f" /admin/routing/mode, {mode['store_s'] * 1000:.0f} ms); on"
            f" every proxy's /healthz after {_every(mode['seconds'], '10 s')}"
            f" ({_seconds(mode['seconds'])})"
        )
    if "label" in probes:
        label = probes["label"]
        first = next(iter(label["seconds"]))
        before = {k.removeprefix("http://"): v for k, v in label["pool_before"].items()}
        print(
            f"label taught on {first.removeprefix('http://')} (answer {label['request']['status']},"
            f" source {label['request']['source']}): in every pool after"
            f" {_every(label['seconds'], '10 s')} ({_seconds(label['seconds'])});"
            f" pools before: {_counts(before)}"
        )
