"""`crabbot chat`: open the bot and talk to it in the terminal."""

from __future__ import annotations

import argparse
import getpass

from rich.console import Console

from bot.adapters.console import run_console, terminal_reader
from bot.cli.tooling import seed_progress
from bot.config import CrabbotConfig
from bot.console_history import PrivateHistory, history_path
from bot.runtime import BotCore
from router import Secrets
from router.store.database import warn_if_readable


async def run_chat(args: argparse.Namespace, config: CrabbotConfig) -> int:
    out = Console()
    err = Console(stderr=True)
    err.print(f"[dim]database: {config.database.path}[/dim]", highlight=False)
    with seed_progress(err) as update:
        core = await BotCore.open(config, Secrets(), mode_override=args.mode, progress=update)
    try:
        router = core.router
        if router.routes_locally and router.mode != "off" and router.categorizer is None:
            err.print(
                f"[dim]note: {router.categorizer_missing or 'the categorizer is off'}; the local"
                " signal decides alone[/dim]",
                highlight=False,
            )
        path = history_path(config.database.path)
        warn_if_readable(path)
        history = PrivateHistory(path)
        core.admin.console_history = history  # /forget empties it too
        await run_console(core, args.name or getpass.getuser(), terminal_reader(history), out)
        return 0
    finally:
        await core.close()
