"""`crabbot run discord` that cannot start (issue 24, 13): the token refused by Discord's REST
API (401 on /users/@me) or by its gateway (closed with 4004), the message content intent off
in the portal (4014), or Discord not reachable, each is one line with the fix and status 2.
The real discord.py talks to the fake Discord API and gateway on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.fakes.discord_api import FakeDiscord
from tests.test_run_stops import ROOT, env

GOOD, WRONG = "good.discord.token", "wrong.discord.token"
# The real CLI, with discord.py's two fixed addresses (REST and gateway) pointed at the fake.
LAUNCH = (
    "import sys, yarl, discord.http, discord.gateway\n"
    "discord.http.Route.BASE = sys.argv[1]\n"
    "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])\n"
    "from bot.cli import main\n"
    "sys.exit(main(sys.argv[3:]))\n"
)


async def run_discord(tmp_path: Path, api: str, gateway: str, token: str) -> tuple[int, list[str]]:
    config = tmp_path / "crabbot.toml"
    config.write_text(
        '[database]\npath = "crabbot.db"\n'
        '[upstream]\nbase_url = "http://127.0.0.1:9/v1"\nmax_retries = 0\n'
        "[categorizer]\nenabled = false\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCH, api, gateway, "run", "discord", "--config", str(config),
        cwd=ROOT, env=env(DISCORD_BOT_TOKEN=token),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 120)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    return process.returncode or 0, lines


async def test_discord_start_failures_are_one_line_with_status_2(tmp_path, refused_port):
    refusing = await FakeDiscord(token=GOOD, gateway_token=GOOD).start()
    no_intent = await FakeDiscord(message_content=False).start()
    try:
        cases = {
            "rest 401": (refusing.api_base, refusing.gateway_url, WRONG),
            "gateway 4004": (no_intent.api_base, refusing.gateway_url, WRONG),
            "intent 4014": (no_intent.api_base, no_intent.gateway_url, GOOD),
            "unreachable": (f"http://127.0.0.1:{refused_port}/api/v10", "ws://127.0.0.1:9/", GOOD),
        }
        seen = {name: await run_discord(tmp_path, *case) for name, case in cases.items()}
    finally:
        await refusing.stop()
        await no_intent.stop()
    for name, (code, lines) in seen.items():
        assert code == 2, (name, lines)
        assert not any("Traceback" in line for line in lines), (name, lines)
        assert lines[-1].startswith("error: "), (name, lines)
        assert not any("WARNING" in line for line in lines), (name, lines)  # voice libraries
    assert "DISCORD_BOT_TOKEN" in seen["rest 401"][1][-1]
    assert "DISCORD_BOT_TOKEN" in seen["gateway 4004"][1][-1]
    assert "Message Content Intent" in seen["intent 4014"][1][-1]
    unreachable = seen["unreachable"][1][-1]
    assert "cannot reach discord" in unreachable and "network" in unreachable
    assert all(WRONG not in line for _, lines in seen.values() for line in lines)
