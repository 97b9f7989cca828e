"""`crabbot chat`: open the bot and talk to it in the terminal. SIGTERM and SIGHUP (the terminal
closed) stop it like Ctrl-D: every routing-log row and memory exchange is written first."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import signal

from rich.console import Console

from bot.adapters.console import run_console, terminal_reader
from bot.cli.start_checks import upstream_warning
from bot.cli.tooling import seed_progress
from bot.config import CrabbotConfig
from bot.console_history import PrivateHistory, history_path
from bot.runtime import BotCore
from router import Secrets
from router.store.database import describe
from router.store.sqlite_files import warn_if_readable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


async def run_chat(args: argparse.Namespace, config: CrabbotConfig) -> int:
    out = Console()
    err = Console(stderr=True)
    err.print(f"[dim]database: {describe(config.database)}[/dim]", highlight=False)
    with seed_progress(err) as update:
        core = await BotCore.open(config, Secrets(), mode_override=args.mode, progress=update)
    loop = asyncio.get_running_loop()
    chat = asyncio.current_task()
    assert chat is not None
    stopped: list[int] = []

    def stop(signum: int) -> None:
        stopped.append(signum)
        chat.cancel()

    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop, sig)
    try:
        router = core.router
        if router.routes_locally and router.mode != "off" and router.categorizer is None:
            err.print(
                f"[dim]note: {router.categorizer_missing or 'the categorizer is off'}; the local"
                " signal decides alone[/dim]",
                highlight=False,
            )
        warning = await upstream_warning(core.upstream)
        if warning:
            err.print(f"[yellow]warning: {warning}[/yellow]", highlight=False)
        path = history_path(config.database.path)
        warn_if_readable(path)
        history = PrivateHistory(path)
        core.admin.console_history = history  # /forget empties it too
        name = args.name or getpass.getuser()
        await run_console(core, name, terminal_reader(history), out, conv=args.conv)
        return 0
    except asyncio.CancelledError:
        if not stopped:
            raise
        chat.uncancel()  # stopped by a signal: close as on Ctrl-D, then exit 128 + signal
        return 128 + stopped[0]
    finally:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await core.close()
