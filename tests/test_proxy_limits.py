"""The proxy against unauthenticated load, over raw sockets on 127.0.0.1: a huge header, too many
headers, a head that never arrives and too many connections each get a clean answer and a closed
connection, are counted, and leave other clients' connections serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.proxy_helpers import CLIENT_KEY, GREETING, RunningProxy, running_proxy, user

LIMIT_S = 60.0  # a guard against a hang, never a measure


CHAT = ("/v1/chat/completions", {"model": "cheap", "messages": user(GREETING)})
RESPONSES = ("/v1/responses", {"model": "cheap", "input": GREETING})


def _request(url: str, extra: bytes = b"", asked: tuple[str, dict[str, Any]] = CHAT) -> bytes:
    path, payload = asked
    body = json.dumps(payload).encode()
    host = url.split("//", 1)[1].split("/", 1)[0]
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def _address(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    return host, int(port)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer: status, headers (lower-case names), body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), LIMIT_S)
    lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), LIMIT_S)
    return int(lines[0].split()[1]), headers, body


class Connection:
    """One raw keep-alive connection to the proxy."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(self, url: str) -> int:
        self.writer.write(_request(url))
        status, _, _ = await _answer(self.reader)
        return status

    async def closed(self) -> bool:
        """True once the proxy has closed it (the next read is the end)."""
        return await asyncio.wait_for(self.reader.read(1), LIMIT_S) == b""


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection(*_address(url))
    try:
        yield Connection(reader, writer)
    finally:
        writer.close()


@pytest.fixture
async def limited(tmp_path, provider) -> AsyncIterator[RunningProxy]:
    async with running_proxy(
        tmp_path / "limits.db",
        None,
        provider.base_url,
        max_header_bytes=16_384,
        max_headers=50,
        header_timeout_s=0.5,
        max_connections=8,
        keep_alive_s=120.0,
    ) as proxy:
        yield proxy


async def test_a_client_that_hangs_up_mid_upload_is_no_proxy_failure(tmp_path, provider, caplog):
    """Half a body, then the connection closed: counted as a client gone, logged at info, not
    as the proxy failing (an error line, `proxy_failures`), and nothing reaches the provider."""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    caplog.set_level(logging.INFO)
    async with running_proxy(tmp_path / "gone.db", None, provider.base_url) as proxy:
        _, writer = await asyncio.open_connection(*_address(proxy.url))
        writer.write(head + b'{"model": "cheap", ')
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        # Leaving the context stops the server, which first lets the open request end.
    assert proxy.router.counters["clients_gone"] == 1
    assert not proxy.router.counters["proxy_failures"]
    assert "hung up" in caplog.text and "the proxy failed" not in caplog.text
    assert provider.requests == []


@pytest.mark.parametrize("endpoint", [CHAT, RESPONSES], ids=["chat", "responses"])
async def test_a_client_that_hangs_up_before_its_whole_answer_ends_the_call(
    tmp_path, provider, endpoint
):
    """A request not streamed, whose client hangs up while the provider is still at work: the
    proxy gives the call up (its connection to the provider closes, so the provider can stop
    generating and billing) and logs the row as client_gone, not completed."""
    asked, dropped = asyncio.Event(), asyncio.Event()

    async def held(body: dict) -> str:
        asked.set()
        try:
            await asyncio.Event().wait()  # the provider is still generating
        finally:
            dropped.set()  # the proxy closed the connection: the handler is cancelled
        return "never sent"

    provider.reply = held
    async with running_proxy(tmp_path / "gone.db", None, provider.base_url) as proxy:
        _, writer = await asyncio.open_connection(*_address(proxy.url))
        writer.write(_request(proxy.url, asked=endpoint))
        await asyncio.wait_for(asked.wait(), LIMIT_S)
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(dropped.wait(), LIMIT_S)
        (row,) = await proxy.settled_rows("TRUE", 1)
    assert (row["outcome"], row["prompt_tokens"]) == ("client_gone", None)
    assert not proxy.router.counters["proxy_failures"]


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        (b"X-Big: " + b"a" * 1_048_576 + b"\r\n", "a 1 MB header"),
        (b"".join(b"X-H%d: v\r\n" % n for n in range(10_000)), "10,000 headers"),
        (b"X-Many: " + b"b" * 4000 + b"\r\n" + b"X-More: " + b"c" * 14_000 + b"\r\n", "18 KB"),
    ],
)
async def test_an_oversized_head_gets_431_and_other_clients_keep_their_connection(
    limited, provider, extra, what
):
    async with connection(limited.url) as other, connection(limited.url) as flood:
        assert await other.ask(limited.url) == 200
        flood.writer.write(_request(limited.url, extra))
        with_error = _answer(flood.reader)
        status, headers, body = await with_error
        assert (status, headers["connection"]) == (431, "close"), what
        assert json.loads(body)["error"]["code"] == "request_headers_too_large"
        assert await flood.closed()
        assert await other.ask(limited.url) == 200
    assert limited.router.counters["headers_too_large"] == 1
    assert len(provider.requests) == 2  # the flood reached no provider


async def test_a_head_that_does_not_arrive_in_time_gets_408(limited, provider):
    async with (
        connection(limited.url) as silent,
        connection(limited.url) as slow,
        connection(limited.url) as other,
    ):
        slow.writer.write(_request(limited.url)[:40])  # and then nothing
        assert await other.ask(limited.url) == 200
        for stalled in (silent, slow):
            status, _, body = await _answer(stalled.reader)
            assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
            assert await stalled.closed()
        assert await other.ask(limited.url) == 200  # an idle keep-alive one is not cut
    assert limited.router.counters["header_timeouts"] == 2


async def test_past_max_connections_a_new_one_gets_503_and_open_ones_keep_serving(
    limited, provider
):
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(connection(limited.url)) for _ in range(8)]
        for one in held:  # each one is open at the proxy once it has been answered
            assert await one.ask(limited.url) == 200
        async with connection(limited.url) as refused:
            status, headers, body = await _answer(refused.reader)
            assert (status, headers["retry-after"]) == (503, "1")
            assert json.loads(body)["error"]["code"] == "too_many_connections"
            assert await refused.closed()
        assert [await one.ask(limited.url) for one in held] == [200] * 8
    assert limited.router.counters["connections_refused"] == 1


async def test_during_a_flood_of_silent_connections_a_real_client_still_reads_its_503(
    tmp_path, provider
):
    """Issue 24, 5: past max_connections, a flood of connections that send nothing fills the
    refused ones kept open to be read (MAX_LINGERING); a real client refused after them, its
    request already sent, must still read its 503, never a reset."""
    async with (
        running_proxy(
            tmp_path / "flood.db", None, provider.base_url,
            header_timeout_s=10.0, max_connections=4, keep_alive_s=120.0,
        ) as proxy,
        contextlib.AsyncExitStack() as stack,
    ):  # fmt: skip
        held = [await stack.enter_async_context(connection(proxy.url)) for _ in range(4)]
        for one in held:
            assert await one.ask(proxy.url) == 200
        silent = [await stack.enter_async_context(connection(proxy.url)) for _ in range(80)]
        for one in silent:  # each refused, kept open by the client, sending nothing
            assert (await _answer(one.reader))[0] == 503
        statuses = []
        for _ in range(5):
            # Connected and its request sent before the proxy accepts it (the loop is not run
            # in between), as when a flood keeps the proxy behind on accepting.
            sock = socket.create_connection(_address(proxy.url))
            sock.sendall(_request(proxy.url))
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                statuses.append((await _answer(reader))[0])
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                statuses.append(type(exc).__name__)
            finally:
                writer.close()
        assert statuses == [503] * 5
        assert [await one.ask(proxy.url) for one in held] == [200] * 4


async def test_an_upgrade_request_is_answered_as_uvicorn_answers_it(limited):
    async with connection(limited.url) as client:
        client.writer.write(
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
            b"Upgrade: h2c\r\n\r\n"
        )
        status, _, _ = await _answer(client.reader)
    assert status == 200
