"""POST /v1/embeddings: passed through to the provider as sent (any model name, nothing routed),
with one routing-log row (source "passthrough") carrying its prompt tokens and how it ended."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from router.proxy.app import ChatProxy, Target, decision_headers
from router.proxy.errors import ProxyError, bad_request
from router.proxy.request import model_body
from router.proxy.usage import Usage


def parse_embeddings_request(raw: bytes) -> dict[str, Any]:
    """The checked body; a 400 ProxyError naming the first problem."""
    body = model_body(raw)
    given = body.get("input")
    if not isinstance(given, str | list) or not given:
        raise bad_request("input must be a string or a non-empty array", "input")
    return body


class EmbeddingsEndpoint:
    """The handler, sharing the chat proxy's keys, router and provider."""

    def __init__(self, chat: ChatProxy) -> None:
        self.chat = chat

    async def handle(self, request: Request) -> Response:
        chat = self.chat
        label, raw = await chat._admitted(request)
        body = parse_embeddings_request(raw)
        chat._check_model(label, body["model"])
        # The texts are not kept: a retrieval setup embeds whole documents.
        decision = chat.router.named(body["model"], None, "passthrough", "")
        chat.metrics.decided(decision)
        target = Target(decision.model, decision, decision_headers(decision))
        try:
            raw, data = await chat.provider.post_json("/embeddings", body)
        except ProxyError as error:
            chat._failed(target, error)
            return error.response(target.headers)
        except BaseException:
            chat.router.finish(decision, "interrupted", error="the proxy failed")
            raise
        usage = data.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        counted = Usage(prompt, 0) if isinstance(prompt, int) else None
        chat._ended(target, "completed", counted)
        return Response(raw, media_type="application/json", headers=target.headers)
