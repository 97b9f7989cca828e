"""A Groq-compatible server on 127.0.0.1, scripted per test: chat completions answer with a given
reply text, an HTTP status, or a delay; audio transcriptions (multipart, Whisper's verbose_json)
with a given transcript or status; every request is recorded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    content: str = '{"category": "casual", "confidence": 0.9}'
    status: int = 200
    delay_s: float = 0.0


@dataclass
class FakeGroq:
    """Answers POST /openai/v1/chat/completions with `respond(request_json) -> Reply`."""

    respond: Callable[[dict[str, Any]], Reply] = field(default=lambda _request: Reply())
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    transcript: str = "晚饭吃什么？"
    transcript_language: str = "chinese"
    transcription_status: int = 200
    transcriptions: list[dict[str, Any]] = field(default_factory=list)  # form fields + file
    # Awaited before each chat completion is answered (something that happens meanwhile).
    gate: Callable[[], Awaitable[None]] | None = None
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeGroq:
        app = web.Application()
        app.router.add_post("/openai/v1/chat/completions", self._completions)
        app.router.add_post("/openai/v1/audio/transcriptions", self._transcriptions)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        seen: dict[str, Any] = {}
        for name, value in form.items():
            if isinstance(value, web.FileField):
                seen[name] = {"filename": value.filename, "data": value.file.read()}
            else:
                seen[name] = value
        seen["authorization"] = request.headers.get("Authorization")
        self.transcriptions.append(seen)
        if self.transcription_status != 200:
            error = {"error": {"message": "service unavailable", "type": "internal_server_error"}}
            return web.json_response(error, status=self.transcription_status)
        return web.json_response(
            {
                "task": "transcribe",
                "language": self.transcript_language,
                "duration": 12.0,
                "text": self.transcript,
                "segments": [],
                "x_groq": {"id": "req_fake"},
            }
        )

    def user_content(self, index: int = -1) -> str:
        return str(self.requests[index]["messages"][-1]["content"])

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        reply = self.respond(body)
        if self.gate is not None:
            await self.gate()
        if reply.delay_s:
            # Held until the delay passes or the test ends, whichever is first.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), reply.delay_s)
        if reply.status != 200:
            error = {"error": {"message": "service unavailable", "type": "internal_server_error"}}
            return web.json_response(error, status=reply.status)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "llama-3.1-8b-instant"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply.content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            }
        )


def category_reply(category: str, confidence: float = 0.95) -> Reply:
    return Reply(json.dumps({"category": category, "confidence": confidence}))
