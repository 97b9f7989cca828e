"""A fake OpenAI-compatible chat completions server: records the model each request asked for
and answers through a reply function, or fails with the status codes queued in `failures`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.fakes.server import LocalServer

ReplyFn = Callable[[dict[str, Any]], Awaitable[str] | str]


def last_user_text(body: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def echo(body: dict[str, Any]) -> str:
    """The default answer: which model was asked, and what the user said last."""
    return f"[{body['model']}] {last_user_text(body)}"


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's HTTP headers, lower-case names
        self.failures: list[int] = []
        self.reply: ReplyFn = echo
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
                "usage": {
                    "prompt_tokens": len(json.dumps(body["messages"])) // 4,
                    "completion_tokens": len(text) // 4 + 1,
                    "total_tokens": len(json.dumps(body["messages"])) // 4 + len(text) // 4 + 1,
                },
            }
        )
