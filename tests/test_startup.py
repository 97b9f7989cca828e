"""What a start costs that a user would notice: `crabbot route` loads no chat platform, charting
or provider SDK it does not use, and the message given to it is embedded while the router loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from router import Secrets, open_router
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parent.parent
UNUSED_BY_ROUTE = {"groq", "openai", "telegram", "discord", "matplotlib", "uvicorn", "starlette"}
# Runs the real command, then names every top-level package the process imported.
WRAPPER = (
    "import atexit, json, runpy, sys\n"
    "atexit.register(lambda: print('MODULES ' + json.dumps(sorted({m.split('.')[0]"
    " for m in sys.modules})), file=sys.stderr))\n"
    "sys.argv = ['crabbot', *sys.argv[1:]]\n"
    "runpy.run_module('bot.cli', run_name='__main__')\n"
)


def imported_by(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    clean = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
        cwd=ROOT,
    )
    for line in result.stderr.splitlines():
        if line.startswith("MODULES "):
            return result, set(json.loads(line[len("MODULES ") :]))
    raise AssertionError(f"no module list: {result.stderr}")


def test_route_imports_no_platform_sdk_or_charting(seeded_db):
    result, modules = imported_by(
        "route", "--db", str(seeded_db), "--mode", "live", "--json", "早安"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["tier"] == "cheap"
    assert not modules & UNUSED_BY_ROUTE, modules & UNUSED_BY_ROUTE
    assert "rich" not in modules  # nothing is drawn for --json
    assert "pydantic_settings" not in modules


def test_route_with_a_groq_key_loads_groq_and_still_no_platform(seeded_db):
    """The categorizer is configured by the key: its SDK comes with it, nothing else does."""
    result, modules = imported_by(
        "route", "--db", str(seeded_db), "--mode", "off", "hello", GROQ_API_KEY="gsk-unused"
    )
    assert result.returncode == 0, result.stderr
    assert "groq" in modules and "rich" in modules  # the table a person reads
    assert not modules & (UNUSED_BY_ROUTE - {"groq"}), modules & UNUSED_BY_ROUTE


async def test_first_texts_are_embedded_while_the_router_opens(seeded_db, embedder):
    text = "a message only this test routes: 7f3c"
    router = await open_router(
        make_config(seeded_db, "live"),
        Secrets(groq_api_key=None),
        embedder=embedder,
        first_texts=[text],
    )
    try:
        hits, misses = embedder.cache_hits, embedder.cache_misses
        decision = await router.route(text)
    finally:
        await router.close()
    assert (embedder.cache_hits, embedder.cache_misses) == (hits + 1, misses)
    assert decision.source == "knn"
