"""PostgreSQL's host drops off the network (a partition, a power cut: packets vanish, nothing is
reset): a query waiting on it ends in the store's own error, which every caller degrades on,
instead of hanging until TCP gives up (about 15 minutes, a bot's reply with it); once the link
is back, queries work again without a restart. scripts/fault_db_host.py runs it across network
namespaces.

Needs root, `ip netns` and PostgreSQL 15; without them it is skipped with the reason, and fails
instead under CRABBOT_TEST_PG_REQUIRED=1 (CI). It starts a PostgreSQL of its own in a namespace,
but runs only in the suite's PostgreSQL pass (CRABBOT_TEST_DATABASE_URL set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "fault_db_host.py"
REQUIRED = os.environ.get("CRABBOT_TEST_PG_REQUIRED") == "1"
CANNOT_RUN_HERE = 2  # the script's exit status when the machine lacks what it needs
RUN_LIMIT_S = 600.0  # about 40 s; the script's own watchdog reports a hung query at 120 s


def test_a_query_to_a_database_host_gone_silent_ends_in_an_error_and_the_link_back_heals():
    if not os.environ.get("CRABBOT_TEST_DATABASE_URL") and not REQUIRED:
        pytest.skip("runs with the PostgreSQL suite (CRABBOT_TEST_DATABASE_URL set, as in .ci/run)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CRABBOT_DATABASE_URL", None)  # its own server, not the suite's
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
    )
    if done.returncode == CANNOT_RUN_HERE:
        reason = done.stderr.strip().removeprefix("fault_db_host: ")
        if REQUIRED:
            pytest.fail(f"cannot run here: {reason}")
        pytest.skip(reason)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    # The store's transient error (OperationalError), which the bot and the proxy degrade on;
    # "hung" is the script's watchdog, two minutes in.
    assert result["pooled_query"]["outcome"] == "OperationalError", result
    assert result["new_connection"]["outcome"] == "OperationalError", result
    assert result["after_the_link_is_back"]["outcome"] == "ok", result
