"""The proxy's HTTP app (Starlette): OpenAI-compatible chat completions that route
`model="auto"` with the ModelRouter, say what was decided in X-Crabbot-* headers, and log every
request (auto, alias or passthrough) with how it ended."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from router.decision import RoutingDecision
from router.proxy.access import AUTO, Access
from router.proxy.catalog import model_entry, model_list
from router.proxy.cors import cors_middleware
from router.proxy.errors import ProxyError, model_not_allowed, route_error
from router.proxy.metrics import CONTENT_TYPE, ProxyMetrics, RequestMetrics
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
from router.taxonomy import TIERS
from router.text import last_user_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where one request goes, and the headers that tell the client why."""

    model: str
    decision: RoutingDecision
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)  # the provider call's start


def decision_headers(decision: RoutingDecision) -> dict[str, str]:
    headers = {
        "X-Crabbot-Source": decision.source,
        "X-Crabbot-Model": decision.model,
        "X-Crabbot-Decision-Id": decision.id,
    }
    if decision.tier:
        headers["X-Crabbot-Tier"] = decision.tier
    if decision.category is not None:
        headers["X-Crabbot-Category"] = decision.category
    if decision.source not in ("alias", "passthrough"):
        headers["X-Crabbot-Routing-Ms"] = f"{decision.latency_ms:.2f}"
    return headers


def chat_error_event(error: ProxyError) -> bytes:
    """A stream's last event when the provider fails mid-way, as chat completions end one."""
    return f"data: {json.dumps(error.body())}\n\n".encode()


class Gateway:
    """The steps every endpoint shares (admission, routing, the log row's end, the relay), over
    one router and one provider client."""

    def __init__(
        self, router: ModelRouter, provider: Provider, env_keys: Sequence[str] = ()
    ) -> None:
        self.router = router
        self.provider = provider
        self.settings = router.config.proxy
        self.access = Access(
            self.settings, router.config.models, [*self.settings.client_keys, *env_keys]
        )
        self.metrics = ProxyMetrics(router.counters, router.log.writer)
        # Streams still being relayed: their rows are queued when they end (see `settled`).
        self._relays: set[asyncio.Future[None]] = set()

    # -- checks --------------------------------------------------------------------------------

    def authorize(self, request: Request) -> str | None:
        """The caller's key label; a 401 without a valid key (when keys are set)."""
        return self.access.authorize(request)

    async def admitted(self, request: Request) -> tuple[str | None, bytes]:
        """Every POST endpoint's first steps: not our own forwarded request, a valid key (its
        label), and the body within proxy.max_body_bytes."""
        self.refuse_loops(request)
        label = self.authorize(request)
        return label, await read_body(request, self.settings.max_body_bytes)

    def check_model(self, label: str | None, model: str) -> None:
        """A 403 for a model this key may not use, before any routing or provider call."""
        if not self.access.allows(label, model):
            self.router.counters["models_refused"] += 1
            log.info("refused model %.200r for key label %s", model, label or "(none)")
            raise model_not_allowed(model)

    @staticmethod
    def refuse_loops(request: Request) -> None:
        if HOP_HEADER.lower() in request.headers:
            raise ProxyError(
                508,
                "the proxy received its own forwarded request: point proxy.base_url (or"
                " OPENAI_BASE_URL) at the provider, not at this proxy",
                type_="upstream_error",
                code="proxy_loop",
            )

    # -- routing -------------------------------------------------------------------------------

    async def target(self, chat: ChatRequest) -> Target:
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
        elif chat.model in TIERS:
            model = models.for_tier(chat.model)
            decision = self.router.named(
                model, chat.model, "alias", chat.route_text, chat.session_key
            )
        else:
            tier = next((tier for tier in TIERS if models.for_tier(tier) == chat.model), None)
            decision = self.router.named(
                chat.model, tier, "passthrough", chat.route_text, chat.session_key
            )
        self.metrics.decided(decision)
        return Target(decision.model, decision, decision_headers(decision), stream=chat.stream)

    def failed(self, target: Target, error: ProxyError) -> None:
        log.warning(
            "provider call for model %s failed: HTTP %d, %s", target.model, error.status, error
        )
        self.router.counters["upstream_errors"] += 1
        self.metrics.provider_done(target.started, target.stream, error.status)
        self.router.finish(target.decision, "provider_error", error=f"provider: {error.message}")

    def ended(self, target: Target, outcome: str, usage: Usage | None) -> None:
        if outcome == "completed":
            self.metrics.provider_done(target.started, target.stream, None)
        self.router.finish(
            target.decision,
            outcome,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    async def relay(
        self,
        stream: ProviderStream,
        target: Target,
        error_event: Callable[[ProxyError], bytes],
    ) -> AsyncIterator[bytes]:
        """The provider's events as they come; a broken stream's error as the last event
        (`error_event` says it in the endpoint's words); the row ended when the relay ends."""
        relayed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._relays.add(relayed)
        relayed.add_done_callback(self._relays.discard)
        ended = False
        try:
            async for event in stream.events():
                yield event
            ended = True
        except Exception as exc:  # the status line is gone: the error becomes the last event
            error = failure(exc)
            self.failed(target, error)
            yield error_event(error)
        finally:
            # Runs when the client hangs up too; the shield lets the cleanup finish then.
            with anyio.CancelScope(shield=True):
                try:
                    await stream.close()
                finally:
                    # "client_gone" is a no-op when the provider's failure was already logged.
                    self.ended(target, "completed" if ended else "client_gone", stream.usage)
                    relayed.set_result(None)

    async def settled(self) -> None:
        """Wait until every request answered so far is in the log: a streamed answer's row is
        queued when its relay ends, a moment after the client has read the last event."""
        while self._relays:
            await asyncio.wait(set(self._relays))
        await self.router.log.flush()


class ChatEndpoint:
    """POST /v1/chat/completions: routed, forwarded, streamed or not, and logged."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, request: Request) -> Response:
        gateway = self.gateway
        label, raw = await gateway.admitted(request)
        chat = parse_chat_request(raw, request.headers.get(SESSION_HEADER))
        gateway.check_model(label, chat.model)
        target = await gateway.target(chat)
        try:
            if chat.stream:
                return await self._stream(chat, target)
            return await self._complete(chat, target)
        except ProxyError as error:
            gateway.failed(target, error)
            return error.response(target.headers)
        except BaseException:
            gateway.router.finish(target.decision, "interrupted", error="the proxy failed")
            raise

    async def _complete(self, chat: ChatRequest, target: Target) -> Response:
        raw, data = await self.gateway.provider.complete(target.model, chat.body)
        if not data.get("model"):
            data["model"] = target.model
            raw = json.dumps(data).encode()
        self.gateway.ended(target, "completed", usage_of(data))
        return Response(raw, media_type="application/json", headers=target.headers)

    async def _stream(self, chat: ChatRequest, target: Target) -> Response:
        stream = await self.gateway.provider.open_stream(target.model, chat.body, chat.wants_usage)
        headers = target.headers | {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            self.gateway.relay(stream, target, chat_error_event),
            media_type="text/event-stream",
            headers=headers,
        )


class CatalogEndpoint:
    """GET /v1/models and GET /v1/models/{model}, as this key may see them."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def models(self, request: Request) -> Response:
        gateway = self.gateway
        label = gateway.authorize(request)
        return JSONResponse(model_list(gateway.router.config.models, gateway.access, label))

    async def model(self, request: Request) -> Response:
        gateway = self.gateway
        label = gateway.authorize(request)
        name = request.path_params["model"]
        models = gateway.router.config.models
        entry = await model_entry(models, gateway.access, label, name, gateway.provider.model)
        return JSONResponse(entry)


class StatusEndpoint:
    """GET /healthz and GET /metrics."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def healthz(self, request: Request) -> Response:
        """That the proxy is up; with a valid client key (or none configured), more."""
        gateway = self.gateway
        if not gateway.access.authorized(request):
            return JSONResponse({"status": "ok"})
        return JSONResponse(
            {"status": "ok", "mode": gateway.router.mode, "pool_size": gateway.router.pool_size}
        )

    async def prometheus(self, request: Request) -> Response:
        self.gateway.authorize(request)
        return Response(self.gateway.metrics.exposition(), media_type=CONTENT_TYPE)


async def _proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = route_error(request.method, request.url.path, exc.status_code)
    return error.response(dict(exc.headers) if exc.headers else None)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("the proxy failed on %s %s", request.method, request.url.path, exc_info=exc)
    return ProxyError(500, "the proxy failed on this request", type_="server_error").response()


def create_app(router: ModelRouter, provider: Provider, env_keys: Sequence[str] = ()) -> Starlette:
    """The ASGI app; the caller owns (opens and closes) the router and the provider. Client keys
    are proxy.client_keys plus `env_keys` (CRABBOT_PROXY_KEYS)."""
    # Imported here: the embeddings and responses endpoints build on Gateway, defined above.
    from router.proxy.embeddings import EmbeddingsEndpoint
    from router.proxy.responses import ResponsesEndpoint

    gateway = Gateway(router, provider, env_keys)
    chat = ChatEndpoint(gateway)
    embeddings = EmbeddingsEndpoint(gateway)
    responses = ResponsesEndpoint(gateway)
    catalog = CatalogEndpoint(gateway)
    status = StatusEndpoint(gateway)
    routes = [
        Route("/v1/chat/completions", chat.handle, methods=["POST"]),
        Route("/chat/completions", chat.handle, methods=["POST"]),
        Route("/v1/embeddings", embeddings.handle, methods=["POST"]),
        Route("/embeddings", embeddings.handle, methods=["POST"]),
        Route("/v1/responses", responses.handle, methods=["POST"]),
        Route("/responses", responses.handle, methods=["POST"]),
        Route("/v1/models", catalog.models, methods=["GET"]),
        Route("/models", catalog.models, methods=["GET"]),
        Route("/v1/models/{model:path}", catalog.model, methods=["GET"]),
        Route("/models/{model:path}", catalog.model, methods=["GET"]),
        Route("/healthz", status.healthz, methods=["GET"]),
        Route("/metrics", status.prometheus, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {
        ProxyError: _proxy_error,
        HTTPException: _http_error,
        Exception: _server_error,
    }
    middleware = [
        Middleware(RequestMetrics, metrics=gateway.metrics),  # outermost: counts every answer
        *cors_middleware(gateway.settings.cors_origins),
    ]
    app = Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)
    app.state.gateway = gateway
    return app
