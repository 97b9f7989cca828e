"""What `crabbot run` and `crabbot chat` say at start instead of a traceback: a platform that
refuses the token or cannot be reached is one line with the fix; an upstream that wants a key
the bot does not have is a warning before the first message, not an apology on every one."""

from __future__ import annotations

import logging

import httpx
import openai

from bot.upstream import Upstream

log = logging.getLogger(__name__)

TOKEN_VARIABLE = {"telegram": "TELEGRAM_BOT_TOKEN", "discord": "DISCORD_BOT_TOKEN"}
PROBE_TIMEOUT_S = 5.0


def _network_error(exc: BaseException) -> bool:
    import aiohttp

    names = {type(e).__name__ for e in _chain(exc)}
    return any(
        isinstance(e, OSError | httpx.TransportError | aiohttp.ClientConnectionError | TimeoutError)
        for e in _chain(exc)
    ) or bool(names & {"NetworkError", "TimedOut", "ConnectionClosed", "GatewayNotFound"})


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _discord_refused(exc: BaseException) -> bool:
    """The token refused: 401 at login (LoginFailure) or on any call, or the gateway's 4004."""
    import discord

    return (
        isinstance(exc, discord.LoginFailure)
        or (isinstance(exc, discord.HTTPException) and exc.status == 401)
        or (isinstance(exc, discord.ConnectionClosed) and exc.code == 4004)
    )


def start_failure(platform: str, exc: BaseException) -> str | None:
    """One line for a failure to start on `platform`: the token refused, or no network; None
    for anything else (a bug keeps its traceback)."""
    variable = TOKEN_VARIABLE[platform]
    refused = False
    if platform == "telegram":
        from telegram.error import InvalidToken

        refused = any(isinstance(e, InvalidToken) for e in _chain(exc))
    else:
        import discord

        if any(isinstance(e, discord.PrivilegedIntentsRequired) for e in _chain(exc)):
            return (
                "discord refused the message content intent: turn on Message Content Intent on"
                " the application's Bot page in the developer portal, then start again"
            )
        refused = any(_discord_refused(e) for e in _chain(exc))
    if refused:
        return (
            f"{platform} refused the bot token: check {variable} (the token as BotFather or the"
            " developer portal gave it, the whole of it)"
            if platform == "telegram"
            else f"discord refused the bot token: check {variable} (reset and copy it again on"
            " the application's Bot page)"
        )
    if _network_error(exc):
        return (
            f"cannot reach {platform} ({type(exc).__name__}): check the network, a proxy or"
            " firewall, and the [telegram] base_url if you set one; then start again"
            if platform == "telegram"
            else f"cannot reach {platform} ({type(exc).__name__}): check the network, a proxy"
            " or firewall; then start again"
        )
    return None


async def upstream_warning(upstream: Upstream) -> str | None:
    """Ask the upstream for its models once, keyless when no key is set: a 401 or 403 means
    it wants OPENAI_API_KEY. Anything else (no such endpoint, not reachable yet) says nothing
    here; the first reply says what went wrong."""
    if upstream.client is None or upstream.has_key:
        return None
    try:
        await upstream.client.with_options(timeout=PROBE_TIMEOUT_S, max_retries=0).models.list()
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        return (
            f"the upstream at {upstream.base_url} refused a request without a key"
            f" ({exc.status_code}): set OPENAI_API_KEY, or every reply will be an apology"
        )
    except Exception as exc:  # not our business at start
        log.debug("upstream probe: %s", exc)
    return None
