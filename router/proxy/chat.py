"""POST /v1/chat/completions: `model="auto"` routed with the ModelRouter, aliases and other names
as named; forwarded, streamed or not, with X-Crabbot-* headers, and logged with how it ended."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from router.proxy.errors import ProxyError
from router.proxy.gateway import CLIENT_GONE, Gateway, Target
from router.proxy.provider import usage_of
from router.proxy.request import ChatRequest, parse_chat_request


def chat_error_event(error: ProxyError) -> bytes:
    """A stream's last event when the provider fails mid-way, as chat completions end one."""
    return f"data: {json.dumps(error.body())}\n\n".encode()


class ChatEndpoint:
    """POST /v1/chat/completions: routed, forwarded, streamed or not, and logged."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, request: Request) -> Response:
        gateway = self.gateway
        caller, raw = await gateway.admitted(request)
        chat = parse_chat_request(raw, request.headers)
        gateway.check_model(caller.label, chat.model)
        target = await gateway.target(chat, caller)
        try:
            if chat.stream:
                return await self._stream(chat, target)
            return await self._complete(request, chat, target)
        except ProxyError as error:
            gateway.failed(target, error)
            return error.response(target.headers)
        except BaseException:
            gateway.router.finish(target.decision, "interrupted", error="the proxy failed")
            raise

    async def _complete(self, request: Request, chat: ChatRequest, target: Target) -> Response:
        body = chat.body | {"model": target.model}
        answer = await self.gateway.whole_answer(request, target, "/chat/completions", body)
        if answer is None:
            return Response(status_code=CLIENT_GONE)
        raw, data = answer
        if not data.get("model"):
            data["model"] = target.model
            raw = json.dumps(data).encode()
        self.gateway.ended(target, "completed", usage_of(data))
        return Response(raw, media_type="application/json", headers=target.headers)

    def _usage_refused(self) -> None:
        self.gateway.router.counters["stream_usage_refused"] += 1

    async def _stream(self, chat: ChatRequest, target: Target) -> Response:
        stream = await self.gateway.provider.open_stream(
            target.model, chat.body, chat.wants_usage, self._usage_refused
        )
        headers = target.headers | {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            self.gateway.relay(stream, target, chat_error_event),
            media_type="text/event-stream",
            headers=headers,
        )
