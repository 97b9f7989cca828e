"""A fake OpenAI-compatible API on 127.0.0.1 for the bot's and the proxy's tests: chat completions
(whole, or streamed a word at a time with usage last), responses, embeddings and model lookup.
It records every request, answers through a reply function, and can be told to fail, stall,
break a stream off, hold it between chunks, or answer with something that is not an answer."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.server import LocalServer

PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
EMBEDDING_TOKENS_PER_INPUT = 4

# How a server that predates `stream_options` refuses it (Azure OpenAI's older API versions).
STREAM_OPTIONS_REFUSED = {
    "error": {
        "message": "Unrecognized request argument supplied: stream_options",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}

ReplyFn = Callable[[dict[str, Any]], Awaitable[str] | str]
# Awaited before each chunk after the first, with the answer streamed so far.
GateFn = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Seen:
    """One request as the fake received it."""

    model: str
    stream: bool
    body: dict[str, Any]
    authorization: str | None
    headers: dict[str, str]  # lower-case names


def last_user_text(body: dict[str, Any]) -> str:
    """The last user message's text (chat `messages` or responses `input`); a message with images
    adds "(+N images)"."""
    items = body["messages"] if "messages" in body else body.get("input", "")
    if isinstance(items, str):
        return items
    content = next((item["content"] for item in reversed(items) if item.get("role") == "user"), "")
    if isinstance(content, str):
        return content
    text = " ".join(part["text"] for part in content if part["type"] in ("text", "input_text"))
    images = sum(part["type"] in ("image_url", "input_image") for part in content)
    return f"{text} (+{images} images)" if images else text


def echo(body: dict[str, Any]) -> str:
    """The default answer: which model was asked, and what the user said last."""
    return f"[{body.get('model')}] {last_user_text(body)}"


def answer_from(model: str) -> str:
    """An answer naming only the model asked (the proxy's tests' reply)."""
    return f"answer from {model}"


def stream_pieces(text: str) -> list[str]:
    """A streamed answer comes a word (with the space before it) at a time."""
    return re.findall(r"\s*\S+", text) or [text]


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.reply: ReplyFn = echo
        # Set, every answer is this HTTP error (the first `fail_count` only, when that is set),
        # with `fail_headers`; `echo_secrets` puts the request's Authorization header and last
        # message in the error message, as careless providers do.
        self.fail_status: int | None = None
        self.fail_count: int | None = None
        self.fail_headers: dict[str, str] = {}
        self.echo_secrets = False
        self.gate: GateFn | None = None
        self.cut_stream_after: int | None = None  # chunks sent before a stream's connection drops
        # Chunks sent before a stream goes silent; -1: silent before any answer (no status either).
        self.stall_after: int | None = None
        # A 200 answer of this body and content type instead of the real one (e.g. an HTML page).
        self.plain_answer: tuple[bytes, str] | None = None
        # Set, a chat request with `stream_options` is refused as servers that predate it do.
        self.refuse_stream_options = False
        self._released = asyncio.Event()  # what a stalled answer waits for: set on stop
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        # A stalled or gated handler ends when the client hangs up on it.
        self.server = LocalServer(app, access_log=None, handler_cancellation=True)

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/v1"

    @property
    def models(self) -> list[str]:
        return [seen.model for seen in self.requests]

    async def start(self) -> FakeOpenAI:
        await self.server.start()
        return self

    async def stop(self) -> None:
        self._released.set()
        await self.server.stop()

    async def _received(self, request: web.Request) -> dict[str, Any]:
        body = await request.json()
        headers = {name.lower(): value for name, value in request.headers.items()}
        seen = Seen(
            str(body.get("model")),
            bool(body.get("stream")),
            body,
            request.headers.get("Authorization"),
            headers,
        )
        self.requests.append(seen)
        return body

    def _failing(self) -> bool:
        if self.fail_status is None or self.fail_count == 0:
            return False
        if self.fail_count is not None:
            self.fail_count -= 1
        return True

    def _failure(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        message = "the fake provider is failing"
        if self.echo_secrets:
            said = body["messages"][-1].get("content") if "messages" in body else body.get("input")
            message = f"bad request; you sent {request.headers.get('Authorization')} and {said!r}"
        error = {"error": {"message": message, "type": "server_error", "code": "fake_failure"}}
        return web.json_response(error, status=self.fail_status, headers=self.fail_headers)

    async def _text(self, body: dict[str, Any]) -> str:
        text = self.reply(body)
        return text if isinstance(text, str) else await text

    async def _paced(self, request: web.Request, number: int, sent: str) -> bool:
        """Before a stream's chunk `number`: stall, break off (False: send no more) or wait at
        the gate."""
        if number == self.stall_after:
            await self._released.wait()
        if number == self.cut_stream_after:
            assert request.transport is not None
            request.transport.close()
            return False
        if number and self.gate is not None:
            await self.gate(sent)
        return True

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._received(request)
        if self._failing():
            return self._failure(request, body)
        if self.refuse_stream_options and "stream_options" in body:
            return web.json_response(STREAM_OPTIONS_REFUSED, status=400)
        if self.stall_after == -1:
            await self._released.wait()
        if self.plain_answer is not None:
            content, content_type = self.plain_answer
            return web.Response(body=content, headers={"Content-Type": content_type})
        text = await self._text(body)
        if body.get("stream"):
            return await self._stream(request, body, text)
        message = {"role": "assistant", "content": text}
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage(),
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], text: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0}
        base["model"] = body.get("model")

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = base | {"choices": choices} | extra
            if include_usage and "usage" not in extra:
                chunk["usage"] = None
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
        sent = ""
        for number, piece in enumerate(stream_pieces(text)):
            if not await self._paced(request, number, sent):
                return response
            sent += piece
            await send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if include_usage:
            await send([], usage=usage())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses: a response object with one output_text message, or its events."""
        body = await self._received(request)
        if self._failing():
            return self._failure(request, body)
        model, text = str(body.get("model")), await self._text(body)
        if not body.get("stream"):
            return web.json_response(response_object(model, "completed", text))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sequence = 0

        async def send(kind: str, **fields: Any) -> None:
            nonlocal sequence
            data = {"type": kind, "sequence_number": sequence} | fields
            sequence += 1
            await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

        started = response_object(model, "in_progress", text)
        await send("response.created", response=started)
        await send("response.in_progress", response=started)
        done = response_object(model, "completed", text)
        item = done["output"][0]
        where = {"item_id": item["id"], "output_index": 0}
        await send("response.output_item.added", output_index=0, item=item | {"content": []})
        empty = {"type": "output_text", "text": "", "annotations": []}
        await send("response.content_part.added", **where, content_index=0, part=empty)
        sent = ""
        for number, piece in enumerate(stream_pieces(text)):
            if not await self._paced(request, number, sent):
                return response
            sent += piece
            await send("response.output_text.delta", **where, content_index=0, delta=piece)
        await send("response.output_text.done", **where, content_index=0, text=text)
        part = empty | {"text": text}
        await send("response.content_part.done", **where, content_index=0, part=part)
        item["content"] = [part]
        await send("response.output_item.done", output_index=0, item=item)
        await send("response.completed", response=done)
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._received(request)
        if self._failing():
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

    async def _model(self, request: web.Request) -> web.Response:
        """A model the fake has: any name starting "provider-"."""
        name = request.match_info["model"]
        if not name.startswith("provider-"):
            error = {"message": f"The model `{name}` does not exist", "code": "model_not_found"}
            return web.json_response({"error": error}, status=404)
        return web.json_response({"id": name, "object": "model", "created": 1, "owned_by": "p"})


def usage() -> dict[str, int]:
    total = PROMPT_TOKENS + COMPLETION_TOKENS
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": total,
    }


def response_object(model: str, status: str, text: str) -> dict[str, Any]:
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
    message = {"type": "output_text", "text": text, "annotations": []}
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
