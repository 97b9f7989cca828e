"""The proxy's HTTP app (Starlette), assembled: the OpenAI-compatible endpoints (chat, responses,
embeddings, models) and /healthz and /metrics on one gateway, with the error handlers and
middleware."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from router.proxy.catalog import CatalogEndpoint
from router.proxy.chat import ChatEndpoint
from router.proxy.cors import cors_middleware
from router.proxy.embeddings import EmbeddingsEndpoint
from router.proxy.errors import exception_handlers
from router.proxy.gateway import Gateway
from router.proxy.metrics import RequestMetrics
from router.proxy.provider import Provider
from router.proxy.responses import ResponsesEndpoint
from router.proxy.status import StatusEndpoint
from router.router import ModelRouter


def create_app(router: ModelRouter, provider: Provider, env_keys: Sequence[str] = ()) -> Starlette:
    """The ASGI app; the caller owns (opens and closes) the router and the provider. Client keys
    are proxy.client_keys plus `env_keys` (CRABBOT_PROXY_KEYS)."""
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
    middleware = [
        Middleware(RequestMetrics, metrics=gateway.metrics),  # outermost: counts every answer
        *cors_middleware(gateway.settings.cors_origins),
    ]
    app = Starlette(routes=routes, exception_handlers=exception_handlers(), middleware=middleware)
    app.state.gateway = gateway
    return app
