"""A Groq-compatible categorizer for the evaluation scripts: POST /openai/v1/chat/completions on
a free 127.0.0.1 port, each request answered with the text `respond(request_json)` returns, in
Groq's wire format (the real groq SDK talks to it through base_url)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class ScriptedGroq:
    respond: Callable[[dict[str, Any]], str]
    base_url: str = ""
    _runner: web.AppRunner | None = field(default=None, repr=False)

    async def start(self) -> ScriptedGroq:
        app = web.Application()
        app.router.add_post("/openai/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(completion(body, self.respond(body)))


def completion(body: dict[str, Any], content: str) -> dict[str, Any]:
    """A chat completion in Groq's wire format answering `body` with `content`."""
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "llama-3.1-8b-instant"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
    }
