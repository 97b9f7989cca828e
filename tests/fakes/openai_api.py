"""A fake OpenAI-compatible chat completions server: records the model each request asked for
and answers through a reply function, whole or streamed (SSE chunks, usage last), or fails with
the status codes queued in `failures`; `gate` lets a test hold a stream between chunks."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fakes.server import LocalServer

ReplyFn = Callable[[dict[str, Any]], Awaitable[str] | str]
# Awaited before each chunk after the first, with the answer streamed so far.
GateFn = Callable[[str], Awaitable[None]]


def last_user_text(body: dict[str, Any]) -> str:
    """The last user message's text; a message with images adds "(+N images)"."""
    content = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    if isinstance(content, str):
        return content
    text = " ".join(part["text"] for part in content if part["type"] == "text")
    images = sum(part["type"] == "image_url" for part in content)
    return f"{text} (+{images} images)" if images else text


def echo(body: dict[str, Any]) -> str:
    """The default answer: which model was asked, and what the user said last."""
    return f"[{body['model']}] {last_user_text(body)}"


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's HTTP headers, lower-case names
        self.failures: list[int] = []
        self.reply: ReplyFn = echo
        self.gate: GateFn | None = None
        self.cut_stream_after: int | None = None  # chunks sent before a stream is dropped
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self.server = LocalServer(app)
        self.changed = asyncio.Condition()

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"

    @property
    def models(self) -> list[str]:
        return [request["model"] for request in self.requests]

    async def start(self) -> FakeOpenAI:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self.changed:
            self.requests.append(body)
            self.headers.append({name.lower(): value for name, value in request.headers.items()})
            self.changed.notify_all()
        if self.failures:
            status = self.failures.pop(0)
            return web.json_response(
                {"error": {"message": "fake failure", "type": "server_error", "code": None}},
                status=status,
            )
        text = self.reply(body)
        if not isinstance(text, str):
            text = await text
        if body.get("stream"):
            return await self._stream(request, body, text)
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage(body, text),
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], text: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
        }

        async def send(chunk: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(base | chunk)}\n\n".encode())

        await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        sent = ""
        for number, piece in enumerate(chunks(text)):
            if number == self.cut_stream_after:
                assert request.transport is not None
                request.transport.close()
                return response
            if number and self.gate is not None:
                await self.gate(sent)
            sent += piece
            await send({"choices": [{"index": 0, "delta": {"content": piece}}]})
        await send({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({"choices": [], "usage": usage(body, text)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def chunks(text: str) -> list[str]:
    """A streamed answer comes a word (with the space before it) at a time."""
    return re.findall(r"\s*\S+", text) or [text]


def usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = len(json.dumps(body["messages"])) // 4
    completion = len(text) // 4 + 1
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
