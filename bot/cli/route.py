"""`crabbot route`: route one message, or a stream of JSON lines, and print the decisions. It
imports only what routing needs (rich only for the table a person reads): it is timed from exec
to decision, see scripts/bench_startup.py."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TextIO

from bot.cli.tooling import note_missing_categorizer, seed_progress
from bot.config import CrabbotConfig
from router import EmptyMessageError, ModelRouter, RoutingDecision, Secrets
from router import open_router as build_router
from router.taxonomy import Mode


async def open_router(
    config: CrabbotConfig, mode_override: Mode | None, text: str | None
) -> ModelRouter:
    with seed_progress() as update:
        return await build_router(
            config,
            Secrets(),
            mode_override=mode_override,
            progress=update,
            first_texts=() if text is None else (text,),
        )


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def print_decision(decision: RoutingDecision) -> None:
    from rich.console import Console

    out = Console()
    confidence = "-" if decision.confidence is None else f"{decision.confidence:.2f}"
    rows = [
        ("category", decision.category or "-"),
        ("tier", decision.tier),
        ("model", decision.model),
        ("confidence", confidence),
        ("source", decision.source),
        ("latency", f"{decision.latency_ms:.1f} ms"),
    ]
    for label, answer in (("llm said", decision.llm), ("local said", decision.knn)):
        if answer is not None and decision.source not in ("llm" if label == "llm said" else "knn"):
            rows.append((label, f"{answer.category} ({answer.tier}, {answer.confidence:.2f})"))
    if decision.error:
        rows.append(("error", decision.error))
    for label, value in rows:
        out.print(f"[bold]{label:<11}[/bold]{value}", highlight=False)
    if decision.explain():
        out.print(f"[dim]{decision.explain()}[/dim]", highlight=False)


LATEST_AT = 4_102_444_800.0  # 2100-01-01: later is not a plausible time in seconds


def unix_seconds(at: object) -> float | None:
    """A line's "at": Unix seconds, finite and between 1970 and 2100; a millisecond value or
    Inf gets an error naming it (it would break every daily view of the log)."""
    if at is None:
        return None
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise ValueError('"at" must be unix seconds')
    if not math.isfinite(at):
        raise ValueError(f'"at" {at} is not a finite number of unix seconds')
    if at > LATEST_AT:
        hint = " (milliseconds? divide by 1000)" if at / 1000 <= LATEST_AT else ""
        raise ValueError(f'"at" {at} is not a plausible unix time in seconds{hint}')
    if at < 0:
        raise ValueError(f'"at" {at} is before 1970: not a plausible unix time in seconds')
    return float(at)


MAX_SPEAKER_CHARS = 256  # as a proxy's end user (router/proxy/request.py)


def optional_text(item: dict[str, object], field: str, limit: int | None = None) -> str | None:
    """A line's optional string field: None when absent or blank; an error when it is not a
    string, or longer than `limit`."""
    value = item.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f'"{field}" must be a string')
    if limit is not None and len(value) > limit:
        raise ValueError(f'"{field}" is over {limit} characters')
    return value.strip() or None


async def route_stream(
    router: ModelRouter, lines: TextIO, out: TextIO, default_conv: str | None = None
) -> int:
    """Answer each JSON line in order; a bad line gets an error naming it and the rest go on.
    A line without a "conv_key" is in `default_conv` (`--conv`), if given. In a group, "user"
    names who speaks (a turn's context is their own previous turn), and "reply_to" the text of
    the message the line replies to (its context), sent by "reply_user" when given."""
    failures = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg})") from None
            if not isinstance(item, dict):
                raise ValueError("expected a JSON object")
            text = item.get("text")
            if not isinstance(text, str):
                raise ValueError('"text" must be a string')
            conv_key = item.get("conv_key", default_conv)
            if conv_key is not None and not isinstance(conv_key, str):
                raise ValueError('"conv_key" must be a string')
            at = unix_seconds(item.get("at"))
            user = optional_text(item, "user", MAX_SPEAKER_CHARS)
            replied_user = optional_text(item, "reply_user", MAX_SPEAKER_CHARS)
            decision = await router.route(
                text,
                conv_key=conv_key,
                at=at,
                user_key=user,
                name=user,
                replied_to=optional_text(item, "reply_to"),
                replied_author=replied_user,
            )
            router.finish(decision, "routed")
        except (ValueError, EmptyMessageError) as exc:
            failures += 1
            say(f"line {number}: {exc}")
            out.write(json.dumps({"line": number, "error": str(exc)}) + "\n")
            out.flush()
            continue
        out.write(json.dumps(decision.to_json(), ensure_ascii=False) + "\n")
        out.flush()
    return 1 if failures else 0


async def run_route(args: argparse.Namespace, config: CrabbotConfig) -> int:
    if args.text is not None and not args.text.strip():
        say("error: the message is empty; give some text to route")
        return 2
    if args.text is None and sys.stdin.isatty():
        say(
            'usage: crabbot route "a message" (or JSON lines on stdin, one'
            ' {"text": ..., "conv_key": ..., "at": ..., "user": ...} a line; see crabbot route'
            " --help)"
        )
        return 2
    router = await open_router(config, args.mode, args.text)
    try:
        note_missing_categorizer(router)
        if args.text is None:
            return await route_stream(router, sys.stdin, sys.stdout, args.conv)
        decision = await router.route(args.text, conv_key=args.conv)
        router.finish(decision, "routed")
        if args.json:
            print(json.dumps(decision.to_json(), ensure_ascii=False))
        else:
            print_decision(decision)
        return 0
    finally:
        await router.close()
