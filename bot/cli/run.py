"""`crabbot run telegram|discord`: open the bot and serve one chat platform until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from rich.console import Console

from bot.cli.start_checks import start_failure, upstream_warning
from bot.cli.tooling import seed_progress
from bot.config import CrabbotConfig
from bot.runtime import BotCore
from bot.upstream import MISSING_HINT, is_configured
from router import Secrets
from router.store.database import describe

TOKEN_VARIABLE = {"telegram": "TELEGRAM_BOT_TOKEN", "discord": "DISCORD_BOT_TOKEN"}


def _stop_event() -> asyncio.Event:
    """Set on SIGINT, SIGTERM or SIGHUP, so the platform shuts down cleanly (every row and
    memory exchange written)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve_telegram(core: BotCore, token: str, stop: asyncio.Event) -> None:
    from bot.adapters.telegram import build_application, serving

    settings = core.config.telegram
    secret = Secrets().telegram_webhook_secret
    async with serving(build_application(core, token, settings), settings, secret):
        await stop.wait()


async def _serve_discord(core: BotCore, token: str, stop: asyncio.Event) -> None:
    from bot.adapters.discord import build_client

    client = build_client(core)
    async with client:
        runner = asyncio.create_task(client.start(token))
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait((runner, stopper), return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if runner.done():
            runner.result()  # a login or gateway failure ends the run with its error
        else:
            await client.close()
            await runner


async def run_platform(args: argparse.Namespace, config: CrabbotConfig) -> int:
    secrets = Secrets()
    platform: str = args.platform
    token = secrets.telegram_bot_token if platform == "telegram" else secrets.discord_bot_token
    if not token:
        print(f"error: set {TOKEN_VARIABLE[platform]} to run on {platform}", file=sys.stderr)
        return 2
    # Checked before the router opens: no database, model load or seeding for a run that stops.
    if not is_configured(config.upstream, secrets):
        print(f"error: {MISSING_HINT}", file=sys.stderr)
        return 2
    err = Console(stderr=True)
    err.print(f"[dim]database: {describe(config.database)}[/dim]", highlight=False)
    with seed_progress(err) as update:
        core = await BotCore.open(config, secrets, progress=update)
    try:
        warning = await upstream_warning(core.upstream)
        if warning:
            err.print(f"[yellow]warning: {warning}[/yellow]", highlight=False)
        stop = _stop_event()
        try:
            if platform == "telegram":
                await _serve_telegram(core, token, stop)
            else:
                await _serve_discord(core, token, stop)
        except Exception as exc:
            failure = start_failure(platform, exc)
            if failure is None:
                raise
            print(f"error: {failure}", file=sys.stderr)
            return 2
        return 0
    finally:
        await core.close()
