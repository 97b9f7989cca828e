"""Limits on what an unauthenticated client can make the proxy hold, enforced in the HTTP
protocol before any app code runs: the request head's size and header count, the time it may
take to arrive, and the number of open connections. Past a limit the client gets a clean
431/414/408/503 and its connection closes; other connections are not touched; each refusal is
counted (headers_too_large, header_timeouts, connections_refused)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from router.config import ProxySettings
from router.counters import Counters
from router.proxy.errors import ProxyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """The proxy's protocol limits (see [proxy] in config/crabbot.example.toml)."""

    max_head_bytes: int
    max_headers: int
    header_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: ProxySettings) -> Limits:
        return cls(
            settings.max_header_bytes,
            settings.max_headers,
            settings.header_timeout_s,
            settings.max_connections,
        )


class _Refused(Exception):
    """Raised in a parser callback: the request goes no further."""


def refusal(status: int, reason: str, error: ProxyError, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 answer (OpenAI-format JSON) that closes its connection."""
    body = json.dumps(error.body()).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


HEAD_TOO_LARGE = (431, "Request Header Fields Too Large", "request_headers_too_large")
URL_TOO_LONG = (414, "URI Too Long", "request_url_too_long")
LINGER_S = 1.0  # the longest a refused client still sending is read (and dropped) from
MAX_LINGERING = 64  # connections lingering at once; past this the one lingering longest is closed


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits of `limits` (set on a subclass made by
    `limited_protocol`). httptools gathers a header's bytes before it calls back, so the head is
    also measured as it arrives: a header of any length costs at most the limit and one read."""

    limits: Limits
    counters: Counters
    # Of this server (one a protocol class), oldest first (a dict keeps the order).
    lingering: dict[LimitedHttpToolsProtocol, None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused: tuple[int, str, str] | None = None
        self._lingering = False

    # -- connections -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.counters["connections_refused"] += 1
            if self.counters["connections_refused"] in (1, 10, 100) or not (
                self.counters["connections_refused"] % 1000
            ):
                log.warning(
                    "%d connections open: new ones get 503 (proxy.max_connections);"
                    " %d refused so far",
                    len(self.connections) - 1,
                    self.counters["connections_refused"],
                )
            error = ProxyError(
                503,
                "the proxy has too many open connections: retry shortly",
                type_="server_error",
                code="too_many_connections",
            )
            answer = refusal(503, "Service Unavailable", error, b"retry-after: 1\r\n")
            self._close_with(answer, linger=True)
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self.lingering.pop(self, None)
        super().connection_lost(exc)

    # -- the request head ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering or self.transport.is_closing():
            return  # the rest of a refused request: read and dropped
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # as uvicorn does (the proxy serves no websockets)
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refused is not None:
                self._refuse_head(*self._refused)
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse_head(*HEAD_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._header_count = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_head_bytes:
            self._refused = URL_TOO_LONG
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if (
            self._header_count > self.limits.max_headers
            or self._head_bytes > self.limits.max_head_bytes
        ):
            self._refused = HEAD_TOO_LARGE
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    # -- refusing --------------------------------------------------------------------------------

    def _refuse_head(self, status: int, reason: str, code: str) -> None:
        self.counters["headers_too_large"] += 1
        self._disarm_head_timer()
        error = ProxyError(
            status,
            f"the request's head is over the proxy's limit of {self.limits.max_head_bytes} bytes"
            f" or {self.limits.max_headers} headers",
            code=code,
        )
        self._close_with(refusal(status, reason, error), linger=True)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        self.counters["header_timeouts"] += 1
        error = ProxyError(
            408,
            f"the request's head did not arrive within {self.limits.header_timeout_s:g} s",
            code="request_timeout",
        )
        self._close_with(refusal(408, "Request Timeout", error))

    def _close_with(self, answer: bytes, linger: bool = False) -> None:
        """Answer and close, unless an answer is under way on this connection (then close).
        `linger`: the client may still be sending (an oversized head, a request on a connection
        refused), and would get a reset in place of the answer if the socket closed with its
        bytes unread: the proxy closes its side, reads and drops what still comes, and closes
        when the client does, or after LINGER_S; at most MAX_LINGERING at once, so a flood of
        connections holds no file handles: past it the one lingering longest is closed (a
        client that reads its answer closes long before, so that is a silent one), never this
        one, whose request may be unread already. (A client that stalled is closed at once.)"""
        self._disarm_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        self.transport.write(answer)
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        while len(self.lingering) >= MAX_LINGERING:
            oldest = next(iter(self.lingering))
            self.lingering.pop(oldest)
            oldest.transport.close()
        self.transport.write_eof()
        self._lingering = True
        self.lingering[self] = None
        self.flow.resume_reading()
        self.loop.call_later(min(LINGER_S, self.limits.header_timeout_s), self.transport.close)


def limited_protocol(limits: Limits, counters: Counters) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` setting, with these limits and counters."""
    return type(
        "ProxyHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {"limits": limits, "counters": counters, "lingering": {}},
    )
