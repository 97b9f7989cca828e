"""Issue 24's fault matrix, run again on today's code: each numbered finding tried for real on
loopback (`crabbot proxy` as its own process in front of a provider on 127.0.0.1, raw sockets
and httpx clients for the attacks, the CLI itself), or, for the bot's platforms and terminals,
by the tests that drive the real bot against its fakes (run here with pytest); prints the
table `fault | what happened now | lost | verdict`.

    python scripts/fault_matrix.py [--only 5,7] [--no-tests]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.fault_attacks import (  # noqa: E402
    deleted_file,
    head_limits,
    host_and_origin,
    key_echo,
    locked_database,
    model_names,
    session_keys,
)
from scripts.fault_provider import FaultProvider  # noqa: E402
from scripts.fault_proxy import ROOT, seeded  # noqa: E402
from scripts.scripted_groq import ScriptedGroq  # noqa: E402


@dataclass
class Row:
    number: int
    fault: str
    now: str
    lost: str
    verdict: str


FAULTS = {
    1: "anyone can use the bot on the family's key",
    2: "the pool can be taught wrong (injected labels)",
    3: "a proxy key holder steers another conversation",
    4: "a locked database stalls replies, loses memory",
    5: "unauthenticated load exhausts the proxy",
    6: "a keyless proxy driven by any web page",
    7: "odd model names crash, drop keep-alive, billed",
    8: "a deleted database file: silent total loss",
    9: "stops (chat signals, workers, streams, /tmp)",
    10: "2xx body echoing a key; traceback on 500",
    11: "a config for [admins] moves the database",
    12: "`at` in ms or Inf breaks stats for good",
    13: "bad token / no network: traceback; no key warning",
    14: "two `crabbot chat` windows are one conversation",
}
# What the tests prove, for the findings they cover (each drives the real bot, chat or proxy).
TESTS = {
    1: ["tests/test_access.py"],
    2: ["tests/test_learning_gate.py"],
    4: ["tests/test_database_locked.py"],
    9: [
        "tests/test_console_terminal.py::test_sigterm_and_sighup_write_every_row_first",
        "tests/test_run_stops.py::test_a_stop_signal_writes_every_row",
        "tests/test_log_kill.py::test_sigterm_stops_the_proxy_gracefully_with_every_row_written",
        "tests/test_proxy_workers.py::test_after_sigterm_new_connections_are_refused_at_once"
        "_and_a_cut_stream_is_interrupted",
        "tests/test_proxy_workers.py::test_workers_stop_by_themselves_when_their_parent_is_killed",
    ],
    10: [
        "tests/test_proxy_guard.py::test_an_unexpected_failure_is_one_line_counted_and_keeps"
        "_the_connection"
    ],
    13: [
        "tests/test_run_stops.py::test_a_wrong_token_or_no_network_is_one_line_with_status_2",
        "tests/test_run_stops.py::test_the_bot_warns_at_start_when_its_upstream_wants_a_key_it"
        "_lacks",
        "tests/test_discord_start.py",
    ],
    14: ["tests/test_console_terminal.py::test_sigterm_and_sighup_write_every_row_first"],
}
SAID = {
    1: "strangers, unallowed groups and channels, slash commands, Telegram commands: one line"
    " with their id, counted, no model call; edited messages, channel posts, buttons ignored",
    2: "80 injected labels through one key all quarantined, the clean requests stay off cheap;"
    " correct chit-chat still taught (figures: scripts/eval_learning.py)",
    4: "bot replies with another program holding the lock: no wait on the lock, every memory"
    " exchange written once it is released",
    9: "chat (pty) and run telegram: SIGTERM/SIGHUP write every row; proxy SIGTERM writes"
    " every row; --workers 2: new connections refused at once, a cut stream `interrupted`;"
    " a killed parent's workers stop and leave nothing in /tmp",
    10: "an unexpected failure is one log line (no traceback), counted, the connection kept",
    13: "wrong Telegram/Discord token, gateway 4004, intent 4014, unreachable: one line, status"
    " 2; a keyed upstream without OPENAI_API_KEY is a warning at start",
    14: "`crabbot chat --conv kitchen`: the window is console:kitchen, /help names it",
}


def pytest_row(number: int) -> Row:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS[number]]
    done = subprocess.run(
        command, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True, text=True,
    )  # fmt: skip
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    ok = done.returncode == 0
    return Row(
        number,
        FAULTS[number],
        f"{SAID[number]} [pytest: {summary}]",
        "nothing" if ok else "see the failing test",
        "fixed" if ok else "FAILS",
    )


async def at_and_config() -> list[Row]:
    """11 and 12 with the CLI itself."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = os.environ | {"PYTHONPATH": str(ROOT), "XDG_DATA_HOME": str(folder / "xdg")}
        (folder / "config").mkdir()
        (folder / "config" / "crabbot.toml").write_text("[admins]\ntelegram = [123456789]\n")
        probe = "from bot.config import load_config; print(load_config(None).database.path)"
        used = subprocess.run(
            [sys.executable, "-c", probe], cwd=folder, env=env, capture_output=True, text=True
        ).stdout.strip()
        default = str(folder / "xdg" / "crabbot" / "crabbot.db")
        kept = used == default
        rows.append(Row(11, FAULTS[11], f"config/crabbot.toml with only [admins]: database {used}"
                        f" ({'the default one' if kept else 'MOVED'})",
                        "nothing" if kept else "the stored mode, stats, history seem gone",
                        "fixed" if kept else "open"))  # fmt: skip
        lines = [
            json.dumps({"text": "hi there", "at": 1796419000000}),
            '{"text": "hi there", "at": 1e400}',
        ]
        db = folder / "at.db"
        route = subprocess.run(
            [sys.executable, "-m", "bot.cli", "route", "--db", str(db), "--mode", "live"],
            cwd=ROOT, env=env, input="\n".join(lines), capture_output=True, text=True,
        )  # fmt: skip
        errors = [json.loads(line).get("error", "") for line in route.stdout.splitlines()]
        stats = subprocess.run(
            [sys.executable, "-m", "bot.cli", "stats", "--db", str(db), "--plot",
             str(folder / "chart.png")],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        refused = len(errors) == 2 and all(errors) and "milliseconds" in errors[0]
        rows.append(Row(12, FAULTS[12], f"ms -> {errors[0][:60]!r}; 1e400 -> {errors[1][:40]!r};"
                        f" stats --plot after: status {stats.returncode}",
                        "nothing (no row stored)" if refused else "stats broken",
                        "fixed" if refused and stats.returncode == 0 else "open"))  # fmt: skip
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="finding numbers, comma-separated")
    parser.add_argument("--no-tests", action="store_true", help="skip the pytest-run findings")
    args = parser.parse_args()
    only = {int(n) for n in args.only.split(",")} if args.only else set(FAULTS)
    provider = await FaultProvider().start()
    groq = await ScriptedGroq(
        respond=lambda body: json.dumps({"category": "casual", "confidence": 0.95})
    ).start()
    rows: list[Row] = []
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            seed = seeded(Path(tmp)) if only & {3, 4, 5, 6, 7, 8, 10} else Path()
            attacks: list[tuple[int, Callable[[], Awaitable[tuple[str, str, str]]]]] = [
                (3, lambda: session_keys(seed, provider)),
                (4, lambda: locked_database(seed, provider, groq)),
                (5, lambda: head_limits(seed, provider)),
                (6, lambda: host_and_origin(seed, provider)),
                (7, lambda: model_names(seed, provider)),
                (8, lambda: deleted_file(seed, provider, groq, "link")),
                (8, lambda: deleted_file(seed, provider, groq, "copy")),
                (10, lambda: key_echo(seed, provider)),
            ]
            for number, attack in attacks:
                if number in only:
                    now, lost, verdict = await attack()
                    rows.append(Row(number, FAULTS[number], now, lost, verdict))
                    print(f"#{number} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            if only & {11, 12}:
                rows += [row for row in await at_and_config() if row.number in only]
        if not args.no_tests:
            for number in sorted(set(TESTS) & only):
                rows.append(await asyncio.to_thread(pytest_row, number))
                print(f"#{number} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    finally:
        await provider.stop()
        await groq.stop()
    print("| # | fault | what happened now | lost | verdict |")
    print("|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: r.number):
        print(f"| {row.number} | {row.fault} | {row.now} | {row.lost} | {row.verdict} |")
    return 0 if all(row.verdict != "FAILS" for row in rows) else 1


if __name__ == "__main__":
    with httpx.Client():  # httpx imported early: its import cost not inside a measurement
        pass
    sys.exit(asyncio.run(main()))
