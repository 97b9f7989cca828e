"""`crabbot export --conv KEY [--out FILE]`: what crabbot keeps about a conversation (its memory,
its routing-log rows, the pool entries its messages taught) as JSON lines, one row a line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from bot.cli.tooling import store_with_memory
from bot.config import CrabbotConfig
from bot.erasure import export


async def run_export(args: argparse.Namespace, config: CrabbotConfig) -> int:
    async with store_with_memory(config) as (conn, memory):
        rows = await export(conn, memory, args.conv)
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if args.out is None:
        sys.stdout.write(lines)
        return 0
    # The family's words: the file is the owner's alone, like the database.
    descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file already there keeps its mode otherwise
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(lines)
    print(f"{len(rows)} rows written to {args.out}", file=sys.stderr)
    return 0
