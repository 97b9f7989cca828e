"""POST /v1/embeddings: passed through to the provider as sent (any model name, nothing routed),
with one routing-log row (source "passthrough") carrying its prompt tokens and how it ended."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from router.proxy.errors import ProxyError, bad_request
from router.proxy.gateway import Gateway, Target, decision_headers
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
    """The handler, on the gateway's keys, router and provider."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, request: Request) -> Response:
        gateway = self.gateway
        caller, raw = await gateway.admitted(request)
        body = parse_embeddings_request(raw)
        gateway.check_model(caller.label, body["model"])
        # The texts are not kept: a retrieval setup embeds whole documents.
        decision = gateway.router.named(body["model"], None, "passthrough", "")
        gateway.metrics.decided(decision)
        target = Target(decision.model, decision, decision_headers(decision))
        try:
            raw, data = await gateway.provider.post_json("/embeddings", body)
        except ProxyError as error:
            gateway.failed(target, error)
            return error.response(target.headers)
        except BaseException:
            gateway.router.finish(decision, "interrupted", error="the proxy failed")
            raise
        usage = data.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        counted = Usage(prompt, 0) if isinstance(prompt, int) else None
        gateway.ended(target, "completed", counted)
        return Response(raw, media_type="application/json", headers=target.headers)
