"""An OpenAI-compatible chat completions (and responses, embeddings) provider on 127.0.0.1:
answers at once (JSON or SSE chunks or events, with usage), can be told to fail, and records the
model and key of every request."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
EMBEDDING_TOKENS_PER_INPUT = 4
STREAM_PIECES = ("Hello", " from", " the", " fake", " provider.")


@dataclass(frozen=True)
class Seen:
    """One request as the provider received it."""

    model: str
    stream: bool
    body: dict[str, Any]
    authorization: str | None
    headers: dict[str, str]  # lower-case names


@dataclass
class FakeProvider:
    """POST /v1/chat/completions; `fail_status` set makes every answer that HTTP error (the first
    `fail_count` answers only, when set), with `fail_headers`; `echo_secrets` puts the request's
    Authorization header and last message in the error message, as careless providers do."""

    requests: list[Seen] = field(default_factory=list)
    fail_status: int | None = None
    fail_count: int | None = None
    fail_headers: dict[str, str] = field(default_factory=dict)
    echo_secrets: bool = False
    cut_stream_after: int | None = None  # chunks sent before a stream's connection is dropped
    # Chunks sent before a stream goes silent; -1: silent before any answer (no status either).
    stall_after: int | None = None
    # A 200 answer of this body and content type instead of the real one (e.g. an HTML page).
    plain_answer: tuple[bytes, str] | None = None
    record: bool = True  # off for benchmarks, so a long run does not grow a list
    base_url: str = ""
    _runner: web.AppRunner | None = None
    # What a stalled answer waits for: set only when the provider stops.
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeProvider:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        # A stalled handler ends when the proxy hangs up on it.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def models(self) -> list[str]:
        return [seen.model for seen in self.requests]

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model"))
        stream = bool(body.get("stream"))
        if self.record:
            headers = {name.lower(): value for name, value in request.headers.items()}
            authorization = request.headers.get("Authorization")
            self.requests.append(Seen(model, stream, body, authorization, headers))
        if self.fail_status is not None and (self.fail_count is None or self.fail_count > 0):
            if self.fail_count is not None:
                self.fail_count -= 1
            return self._failure(request, body)
        if self.stall_after == -1:
            await self._released.wait()
        if self.plain_answer is not None:
            content, content_type = self.plain_answer
            return web.Response(body=content, headers={"Content-Type": content_type})
        if stream:
            return await self._stream(request, body, model)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply_text(model)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage(),
            }
        )

    async def _model(self, request: web.Request) -> web.Response:
        """A model the provider has: any name starting "provider-"."""
        name = request.match_info["model"]
        if not name.startswith("provider-"):
            error = {"message": f"The model `{name}` does not exist", "code": "model_not_found"}
            return web.json_response({"error": error}, status=404)
        return web.json_response({"id": name, "object": "model", "created": 1, "owned_by": "p"})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.record:
            headers = {name.lower(): value for name, value in request.headers.items()}
            authorization = request.headers.get("Authorization")
            self.requests.append(Seen(str(body.get("model")), False, body, authorization, headers))
        if self.fail_status is not None:
            return self._failure(request, body)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, _ in enumerate(texts):
            vector: Any = [float(index), 0.5, -0.25]
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack("<3f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        tokens = EMBEDDING_TOKENS_PER_INPUT * len(texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses: a response object with one output_text message, or its events."""
        body = await request.json()
        model = str(body.get("model"))
        stream = bool(body.get("stream"))
        if self.record:
            headers = {name.lower(): value for name, value in request.headers.items()}
            authorization = request.headers.get("Authorization")
            self.requests.append(Seen(model, stream, body, authorization, headers))
        if self.fail_status is not None:
            return self._failure(request, body)
        if not stream:
            return web.json_response(response_object(model, "completed"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sequence = 0

        async def send(kind: str, **fields: Any) -> None:
            nonlocal sequence
            data = {"type": kind, "sequence_number": sequence} | fields
            sequence += 1
            await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

        started = response_object(model, "in_progress")
        await send("response.created", response=started)
        await send("response.in_progress", response=started)
        done = response_object(model, "completed")
        item = done["output"][0]
        where = {"item_id": item["id"], "output_index": 0}
        await send("response.output_item.added", output_index=0, item=item | {"content": []})
        empty = {"type": "output_text", "text": "", "annotations": []}
        await send("response.content_part.added", **where, content_index=0, part=empty)
        for number, piece in enumerate(STREAM_PIECES):
            if number == self.cut_stream_after:
                assert request.transport is not None
                request.transport.close()
                return response
            await send("response.output_text.delta", **where, content_index=0, delta=piece)
        text = "".join(STREAM_PIECES)
        await send("response.output_text.done", **where, content_index=0, text=text)
        part = empty | {"text": text}
        await send("response.content_part.done", **where, content_index=0, part=part)
        item["content"] = [part]
        await send("response.output_item.done", output_index=0, item=item)
        await send("response.completed", response=done)
        await response.write_eof()
        return response

    def _failure(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        message = "the fake provider is failing"
        if self.echo_secrets:
            said = body["messages"][-1].get("content") if "messages" in body else body.get("input")
            message = f"bad request; you sent {request.headers.get('Authorization')} and {said!r}"
        error = {"error": {"message": message, "type": "server_error", "code": "fake_failure"}}
        return web.json_response(error, status=self.fail_status, headers=self.fail_headers)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0}
        base["model"] = model

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = base | {"choices": choices} | extra
            if include_usage and "usage" not in extra:
                chunk["usage"] = None
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        for number, piece in enumerate(STREAM_PIECES):
            if number == self.stall_after:
                await self._released.wait()
            if number == self.cut_stream_after:
                assert request.transport is not None
                request.transport.close()
                return response
            await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            await send([], usage=usage())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def reply_text(model: str) -> str:
    return f"answer from {model}"


def usage() -> dict[str, int]:
    total = PROMPT_TOKENS + COMPLETION_TOKENS
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": total,
    }


def response_object(model: str, status: str) -> dict[str, Any]:
    """A Responses API response object: its output and usage once completed, none before."""
    answer: dict[str, Any] = {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": None,
    }
    if status != "completed":
        return answer
    message = {
        "type": "output_text",
        "text": reply_text(model),
        "annotations": [],
    }
    answer["output"] = [
        {
            "type": "message",
            "id": "msg_fake",
            "status": "completed",
            "role": "assistant",
            "content": [message],
        }
    ]
    answer["usage"] = {
        "input_tokens": PROMPT_TOKENS,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": COMPLETION_TOKENS,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    }
    return answer
