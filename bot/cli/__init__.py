"""The `crabbot` command: parses arguments, loads config once, and hands off to a subcommand."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli.arguments import add_pool_parser, add_privacy_parsers, add_taxonomy_parser

if TYPE_CHECKING:
    from bot.config import CrabbotConfig


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, help="TOML config file (default config/crabbot.toml)"
    )
    parser.add_argument("--db", type=Path, help="SQLite database file (overrides database.path)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crabbot", description="A family chat bot that routes each message to the right model."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    route = commands.add_parser("route", help="route a message (or JSON lines on stdin)")
    _common(route)
    route.add_argument(
        "text",
        nargs="?",
        help='the message; omit to read JSON lines from stdin: "text", and optionally "conv_key",'
        ' "at" (unix seconds), "user" (who speaks), "reply_to" (the text replied to) and'
        ' "reply_user" (who sent it)',
    )
    route.add_argument(
        "--conv",
        help="conversation key, so a follow-up keeps its task (on stdin: for lines without one)",
    )
    route.add_argument("--json", action="store_true", help="print one JSON object")
    route.add_argument(
        "--mode", choices=("live", "shadow", "off"), help="mode for this run only (not stored)"
    )

    proxy = commands.add_parser("proxy", help="serve the OpenAI-compatible routing proxy")
    _common(proxy)
    proxy.add_argument("--host", help="address to listen on (default proxy.host, 127.0.0.1)")
    proxy.add_argument("--port", type=int, help="port to listen on (default proxy.port, 8888)")
    proxy.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="processes serving the one socket, each with its own router (default 1)",
    )

    chat = commands.add_parser("chat", help="chat with crabbot in the terminal")
    _common(chat)
    chat.add_argument("--name", help="your name in the chat (default: your login name)")
    chat.add_argument(
        "--conv",
        metavar="NAME",
        help="the conversation (console:NAME) this window is, so two windows can be two"
        " (default: your name)",
    )
    chat.add_argument(
        "--mode", choices=("live", "shadow", "off"), help="mode for this run only (not stored)"
    )

    run = commands.add_parser("run", help="run the bot on a chat platform")
    _common(run)
    run.add_argument("platform", choices=("telegram", "discord"))

    stats = commands.add_parser("stats", help="routing stats, agreement and cost over a window")
    _common(stats)
    stats.add_argument("--since", default="7d", help="24h, 7d, 30d ... or all (default 7d)")
    stats.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the daily mix and cost")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    add_pool_parser(commands, _common)
    add_taxonomy_parser(commands, _common)
    add_privacy_parsers(commands, _common)
    return parser


async def _dispatch(args: argparse.Namespace, config: CrabbotConfig) -> int:
    if args.command == "route":
        from bot.cli.route import run_route

        return await run_route(args, config)
    if args.command == "chat":
        from bot.cli.chat import run_chat

        return await run_chat(args, config)
    if args.command == "run":
        from bot.cli.run import run_platform

        return await run_platform(args, config)
    if args.command == "proxy":
        from bot.cli.proxy import run_proxy

        return await run_proxy(args, config)
    if args.command == "stats":
        from bot.cli.stats import run_stats

        return await run_stats(args, config)
    if args.command == "pool":
        from bot.cli.pool import run_pool

        return await run_pool(args, config)
    if args.command == "taxonomy":
        from bot.cli.taxonomy import run_taxonomy

        return await run_taxonomy(args, config)
    if args.command == "forget":
        from bot.cli.forget import run_forget

        return await run_forget(args, config)
    if args.command == "export":
        from bot.cli.export import run_export

        return await run_export(args, config)
    raise AssertionError(f"unhandled command {args.command}")


def _loop_factory(command: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the proxy; the other subcommands keep asyncio's loop (importing uvloop would
    only add to a one-shot tool's start-up)."""
    if command != "proxy":
        return None
    from router.proxy.event_loop import proxy_loop_factory

    return proxy_loop_factory()


def one_blas_thread_from_the_start() -> None:
    """Every crabbot command limits BLAS to one thread (router.embedding.blas); saying so before
    numpy loads spares OpenBLAS starting a thread a core (half of numpy's import, ~40 ms). An
    OPENBLAS_NUM_THREADS already set is kept."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    one_blas_thread_from_the_start()
    from bot.config import load_config  # numpy comes with it (the router's config)
    from router import ConfigError

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config, args.db)
        with asyncio.Runner(loop_factory=_loop_factory(args.command)) as runner:
            return runner.run(_dispatch(args, config))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
