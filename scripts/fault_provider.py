"""An OpenAI-compatible provider for the fault matrix (scripts/fault_matrix.py), in the caller's
process on a free 127.0.0.1 port: chat completions (JSON, or streamed slowly with "stream") and
embeddings; a message containing ECHO-KEY is answered with the bearer key it came with, as a
careless provider might. Counts every call."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


class FaultProvider:
    def __init__(self) -> None:
        self.calls = 0
        self.models: list[str] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> FaultProvider:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _seen(self, body: dict[str, Any]) -> str:
        self.calls += 1
        model = str(body.get("model"))
        self.models.append(model)
        return model

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = self._seen(body)
        text = json.dumps(body.get("messages", []), ensure_ascii=False)
        content = f"answer from {model}"
        if "ECHO-KEY" in text:
            content = f"your key is {request.headers.get('Authorization', '')}"
        if not body.get("stream"):
            message = {"role": "assistant", "content": content}
            return web.json_response(
                {
                    "id": "chatcmpl-fault",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": USAGE,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n in range(60):  # a slow answer: 60 pieces, 0.1 s apart
            chunk = {
                "id": "chatcmpl-fault",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": {"content": f"w{n} "}, "finish_reason": None}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.1)
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = self._seen(body)
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "model": model,
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
        )
