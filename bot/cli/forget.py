"""`crabbot forget --conv KEY | --user PLATFORM:ID [--dry-run]`: erase what crabbot keeps of a
conversation or a person (memory, the routing log's prompt text, the pool entries their messages
taught, the console's history), or count it."""

from __future__ import annotations

import argparse
import re
import sys

from bot.cli.tooling import store_with_memory
from bot.config import CrabbotConfig
from bot.console_history import history_path, is_console
from bot.erasure import forget
from router.store.erasure import Scope

USER_KEY = re.compile(r"[a-z]+:\S+")


async def run_forget(args: argparse.Namespace, config: CrabbotConfig) -> int:
    if args.conv is None and args.user is None:
        print(
            "error: name a conversation (--conv KEY) or a person (--user PLATFORM:ID)",
            file=sys.stderr,
        )
        return 2
    if args.user is not None and not USER_KEY.fullmatch(args.user):
        print(
            f"error: --user {args.user!r}: write PLATFORM:ID, e.g. telegram:12345", file=sys.stderr
        )
        return 2
    scope = Scope(args.conv, args.user)
    # The terminal's history file holds whatever was typed at `crabbot chat`: a console
    # conversation's or person's erasure empties it.
    history = history_path(config.database.path) if is_console(args.conv, args.user) else None
    async with store_with_memory(config) as (conn, memory):
        erased = await forget(conn, memory, scope, dry_run=args.dry_run, history=history)
    who = " in ".join(key for key in (args.user, args.conv) if key)
    print(f"{erased.line(args.dry_run)} ({who})")
    return 0
