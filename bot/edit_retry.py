"""Settling a piece in the message that already shows it: an edit that failed for a passing
reason (a flood limit, a timeout, a lost connection, a server error) is tried again, as an edit
can be; the piece goes out as a new message when the message cannot be edited or tries run out."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

EDIT_TRIES = 3  # the edit and two more; the SDK has already retried each as far as it does
RETRY_PAUSE_S = 1.0  # before the next try after a timeout, a lost connection, a server error
MAX_WAIT_S = 30.0  # a flood limit asking for a longer wait is not waited out


@dataclass(frozen=True)
class EditFailure:
    """Why an edit failed. `retry_in`: the wait before the next try, for a failure that passes
    (its `reason` ends the names it is counted under); None when the message cannot take the
    edit (deleted, too old), where trying again would fail again."""

    reason: str
    retry_in: float | None = None


Classify = Callable[[Exception], EditFailure | None]  # None: not how an edit fails; raised


async def edit_or_send_anew(
    edit: Callable[[], Awaitable[None]],
    send_anew: Callable[[], Awaitable[None]],
    classify: Classify,
    counters: Counter[str],
) -> None:
    """`edit()`, tried again after a failure that passes; `send_anew()` when the message cannot
    be edited, or when the tries run out (the preview then stays above the whole piece: shown
    twice beats cut off mid-sentence with nobody knowing). Trying again cannot show a piece
    twice: an edit that landed unseen changes nothing the next time."""
    for tries in itertools.count(1):
        try:
            await edit()
            return
        except Exception as exc:
            failure = classify(exc)
            if failure is None:
                raise
            if failure.retry_in is None:
                log.warning("could not edit the streamed reply (%s); sending it anew", exc)
                counters["stream_edit_fallbacks"] += 1
                break
            if tries == EDIT_TRIES or failure.retry_in > MAX_WAIT_S:
                log.warning(
                    "gave up editing the streamed reply after %d tries (%s: %s); sending it anew",
                    tries,
                    failure.reason,
                    exc,
                )
                counters[f"stream_edit_failures_{failure.reason}"] += 1
                break
            log.info(
                "the streamed reply's edit failed with %s (%s); trying again in %.1f s",
                failure.reason,
                exc,
                failure.retry_in,
            )
            counters[f"stream_edit_retries_{failure.reason}"] += 1
        await asyncio.sleep(failure.retry_in)
    await send_anew()
