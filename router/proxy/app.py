"""The proxy's HTTP app (Starlette): OpenAI-compatible chat completions that route
`model="auto"` with the ModelRouter and say what was decided in X-Crabbot-* headers."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router import routing_log
from router.decision import RoutingDecision
from router.proxy.errors import ProxyError, unauthorized
from router.proxy.provider import (
    HOP_HEADER,
    Provider,
    ProviderStream,
    Usage,
    failure,
    usage_of,
)
from router.proxy.request import SESSION_HEADER, ChatRequest, parse_chat_request, read_body
from router.router import ModelRouter
from router.signals.continuity import last_user_text
from router.taxonomy import TIERS

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class Target:
    """Where one request goes, and the headers that tell the client why."""

    model: str
    decision: RoutingDecision | None
    headers: dict[str, str] = field(default_factory=dict)


def decision_headers(decision: RoutingDecision) -> dict[str, str]:
    headers = {
        "X-Crabbot-Tier": decision.tier,
        "X-Crabbot-Source": decision.source,
        "X-Crabbot-Model": decision.model,
        "X-Crabbot-Routing-Ms": f"{decision.latency_ms:.2f}",
    }
    if decision.category is not None:
        headers["X-Crabbot-Category"] = decision.category
    if decision.log_id is not None:
        headers["X-Crabbot-Log-Id"] = str(decision.log_id)
    return headers


class ChatProxy:
    """The request handlers, sharing one router and one provider client."""

    def __init__(
        self, router: ModelRouter, provider: Provider, env_keys: Sequence[str] = ()
    ) -> None:
        self.router = router
        self.provider = provider
        self.settings = router.config.proxy
        self._keys = [key.encode() for key in [*self.settings.client_keys, *env_keys]]
        # Usage writes still running for requests already answered (see `settled`).
        self._writes: set[asyncio.Future[None]] = set()

    # -- checks --------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        if not self._keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise unauthorized(
                "You didn't provide an API key: send it as 'Authorization: Bearer <key>'."
            )
        offered = given.strip().encode()
        # Compare with every key, so the time taken says nothing about which one nearly matched.
        matches = [hmac.compare_digest(offered, key) for key in self._keys]
        if not any(matches):
            raise unauthorized("Incorrect API key provided.")

    @staticmethod
    def _refuse_loops(request: Request) -> None:
        if HOP_HEADER.lower() in request.headers:
            raise ProxyError(
                508,
                "the proxy received its own forwarded request: point proxy.base_url (or"
                " OPENAI_BASE_URL) at the provider, not at this proxy",
                type_="upstream_error",
                code="proxy_loop",
            )

    # -- routing -------------------------------------------------------------------------------

    async def _target(self, chat: ChatRequest) -> Target:
        models = self.router.config.models
        if chat.model == AUTO:
            text, history = chat.route_text, chat.history
            if not text.strip():  # an image alone, or no user message: the last user text there is
                text, history = last_user_text(history)
            if text.strip():
                decision = await self.router.route(text, history, conv_key=chat.session_key)
            else:
                decision = await self.router.route_without_text(
                    "no user text to route: the default tier", conv_key=chat.session_key
                )
            return Target(decision.model, decision, decision_headers(decision))
        if chat.model in TIERS:
            model = models.for_tier(chat.model)
            headers = {"X-Crabbot-Tier": chat.model, "X-Crabbot-Source": "alias"}
            return Target(model, None, headers | {"X-Crabbot-Model": model})
        headers = {"X-Crabbot-Source": "passthrough"}
        tier = next((tier for tier in TIERS if models.for_tier(tier) == chat.model), None)
        if tier is not None:
            headers["X-Crabbot-Tier"] = tier
        return Target(chat.model, None, headers)

    async def _note_failure(self, target: Target, error: ProxyError) -> None:
        log.warning(
            "provider call for model %s failed: HTTP %d, %s", target.model, error.status, error
        )
        if target.decision is None or target.decision.log_id is None:
            return
        try:
            await routing_log.record_error(
                self.router.conn, target.decision.log_id, f"provider: {error.message}"
            )
        except aiosqlite.Error:
            log.exception("could not record the provider failure in the routing log")

    async def _record_usage(self, decision: RoutingDecision | None, usage: Usage | None) -> None:
        if decision is not None and usage is not None:
            await self.router.record_usage(decision, usage.prompt_tokens, usage.completion_tokens)

    async def _write_usage(self, decision: RoutingDecision, usage: Usage) -> None:
        try:
            await self._record_usage(decision, usage)
        except Exception:  # nobody awaits this task: say what went wrong here
            log.exception("could not record the usage of an answered request")

    def _track(self, write: asyncio.Future[None]) -> None:
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def settled(self) -> None:
        """Wait until the usage of every request answered so far is written: the client may
        have its answer a moment before the proxy's log has the tokens (tests, shutdown)."""
        while self._writes:
            await asyncio.wait(set(self._writes))

    # -- endpoints -----------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        self._refuse_loops(request)
        self._authorize(request)
        raw = await read_body(request, self.settings.max_body_bytes)
        chat = parse_chat_request(raw, request.headers.get(SESSION_HEADER))
        target = await self._target(chat)
        try:
            if chat.stream:
                return await self._stream(chat, target)
            return await self._complete(chat, target)
        except ProxyError as error:
            await self._note_failure(target, error)
            return error.response(target.headers)

    async def _complete(self, chat: ChatRequest, target: Target) -> Response:
        raw, data = await self.provider.complete(target.model, chat.body)
        if not data.get("model"):
            data["model"] = target.model
            raw = json.dumps(data).encode()
        usage = usage_of(data)
        if usage is not None and target.decision is not None:
            # Written beside the response, not before it: the client does not wait for the log.
            self._track(asyncio.create_task(self._write_usage(target.decision, usage)))
        return Response(raw, media_type="application/json", headers=target.headers)

    async def _stream(self, chat: ChatRequest, target: Target) -> Response:
        stream = await self.provider.open_stream(target.model, chat.body, chat.wants_usage)
        headers = target.headers | {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            self._relay(stream, target), media_type="text/event-stream", headers=headers
        )

    async def _relay(self, stream: ProviderStream, target: Target) -> AsyncIterator[bytes]:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._track(written)
        try:
            async for event in stream.events():
                yield event
        except Exception as exc:  # the status line is gone: the error becomes the last event
            error = failure(exc)
            await self._note_failure(target, error)
            yield f"data: {json.dumps(error.body())}\n\n".encode()
        finally:
            # Runs when the client hangs up too; the shield lets the cleanup finish then.
            with anyio.CancelScope(shield=True):
                try:
                    await stream.close()
                    await self._record_usage(target.decision, stream.usage)
                finally:
                    written.set_result(None)

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        configured = [self.router.config.models.for_tier(tier) for tier in TIERS]
        names = [AUTO, *TIERS, *dict.fromkeys(configured)]
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "crabbot" if name == AUTO or name in TIERS else "provider",
            }
            for name in names
        ]
        return JSONResponse({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "mode": self.router.mode, "pool_size": self.router.pool_size}
        )


async def _proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    error = ProxyError(exc.status_code, str(exc.detail), code=code)
    return error.response(dict(exc.headers) if exc.headers else None)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("the proxy failed on %s %s", request.method, request.url.path, exc_info=exc)
    return ProxyError(500, "the proxy failed on this request", type_="server_error").response()


def create_app(router: ModelRouter, provider: Provider, env_keys: Sequence[str] = ()) -> Starlette:
    """The ASGI app; the caller owns (opens and closes) the router and the provider. Client keys
    are proxy.client_keys plus `env_keys` (CRABBOT_PROXY_KEYS)."""
    proxy = ChatProxy(router, provider, env_keys)
    routes = [
        Route("/v1/chat/completions", proxy.chat_completions, methods=["POST"]),
        Route("/chat/completions", proxy.chat_completions, methods=["POST"]),
        Route("/v1/models", proxy.models, methods=["GET"]),
        Route("/models", proxy.models, methods=["GET"]),
        Route("/healthz", proxy.healthz, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {
        ProxyError: _proxy_error,
        HTTPException: _http_error,
        Exception: _server_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.proxy = proxy
    return app
