"""A provider's server-sent-events answer, relayed event by event: checked to be an event stream
before the client gets a status, watched for stalls, with the usage it reports picked out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from router.proxy.errors import provider_failed, provider_timeout
from router.proxy.usage import Usage, usage_of

# What an event stream's lines start with (a line starting with ":" is a comment).
_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")
# A first line this long with no line break is not an event stream worth waiting for.
_MAX_FIRST_LINE = 65_536


class ProviderStream:
    """An open SSE answer: `events()` yields each event's bytes; `usage` is set once seen.

    Each wait for the provider's next bytes is bounded by `stall_s` and by the request's overall
    `deadline` (event-loop time); either running out ends the stream with a 504 ProxyError.
    `read_usage` picks the usage out of an event's data (chat completion chunks by default)."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        relay_usage_chunk: bool,
        stall_s: float,
        deadline: float,
        read_usage: Callable[[Any], Usage | None] = usage_of,
        scrub: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._response = response
        self._scrub = scrub  # applied to every event relayed (the provider's keys taken out)
        self._read_usage = read_usage
        self._relay_usage_chunk = relay_usage_chunk
        self._stall_s = stall_s
        self._deadline = deadline
        self._buffer = b""
        self._eof = False
        self._first: bytes | None = None
        self.usage: Usage | None = None

    async def start(self) -> None:
        """Read up to the first event; raises a 502 ProxyError when the answer is no event
        stream (an HTML page, an empty body), so the client gets a proper error status."""
        while b"\n" not in self._buffer and not self._eof:
            if len(self._buffer) > _MAX_FIRST_LINE:
                break
            await self._fill()
        first_line = self._buffer.lstrip(b"\xef\xbb\xbf\r\n\t ")
        if not first_line:
            raise provider_failed("the provider's stream ended before its first event")
        if not first_line.startswith(_FIELDS):
            kind = self._response.content_type or "no content type"
            raise provider_failed(f"the provider did not answer with an event stream ({kind})")
        self._first = await self._next_event()

    async def events(self) -> AsyncIterator[bytes]:
        """The events to relay, each ending in a blank line; ProxyError when the stream breaks
        off or stalls."""
        event = self._first
        self._first = None
        while event is not None:
            relayed = self._relayed(event)
            if relayed is not None:
                yield relayed if self._scrub is None else self._scrub(relayed)
            event = await self._next_event()

    async def close(self) -> None:
        # An unfinished answer's connection is closed rather than reused.
        self._response.release()

    async def _next_event(self) -> bytes | None:
        """The next event's lines (without the blank line that ends it); None at the end."""
        lines: list[bytes] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if self._eof:
                    rest = self._buffer.rstrip(b"\r")
                    self._buffer = b""
                    if rest:
                        lines.append(rest)
                    return b"\n".join(lines) if lines else None
                await self._fill()
                continue
            line = self._buffer[:end].rstrip(b"\r")
            self._buffer = self._buffer[end + 1 :]
            if line:
                lines.append(line)
            elif lines:
                return b"\n".join(lines)

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = min(loop.time() + self._stall_s, self._deadline)
        try:
            async with asyncio.timeout_at(deadline):
                chunk = await self._response.content.readany()
        except TimeoutError:
            if deadline >= self._deadline:
                raise provider_timeout("the provider's answer ran past the total timeout") from None
            raise provider_timeout(
                f"the provider's stream stalled: nothing for {self._stall_s:g} s"
            ) from None
        except aiohttp.ClientError:
            raise provider_failed("the provider's stream broke off") from None
        if chunk:
            self._buffer += chunk
        else:
            self._eof = True

    def _relayed(self, event: bytes) -> bytes | None:
        """The event to relay, or None to drop it (a usage-only chunk the client did not ask
        for: the proxy asks for usage on every stream, and strict clients index choices[0])."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:") or b'"usage"' not in line:
                continue
            try:
                data: Any = json.loads(line[5:])
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            usage = self._read_usage(data)
            if usage is not None:
                self.usage = usage
                if not self._relay_usage_chunk and not data.get("choices"):
                    return None
        return event + b"\n\n"
