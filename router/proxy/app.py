"""The proxy's HTTP app (Starlette), assembled: the OpenAI-compatible endpoints (chat, responses,
embeddings, models) and /healthz and /metrics on one gateway, with the error handlers and
middleware."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from router.proxy.admin import AdminEndpoint
from router.proxy.catalog import CatalogEndpoint
from router.proxy.chat import ChatEndpoint
from router.proxy.cors import cors_middleware
from router.proxy.embeddings import EmbeddingsEndpoint
from router.proxy.errors import exception_handlers, failure_line
from router.proxy.gateway import Gateway
from router.proxy.guard import OpenProxyGuard
from router.proxy.metrics import RequestMetrics
from router.proxy.provider import Provider
from router.proxy.responses import ResponsesEndpoint
from router.proxy.status import StatusEndpoint
from router.router import ModelRouter

log = logging.getLogger(__name__)


class ProxyApp(Starlette):
    """Starlette, with an unexpected failure logged in one line and counted (`proxy_failures`):
    Starlette answers it with a 500 and raises it again, and the server would log its whole
    traceback (at every such request) and drop the keep-alive connection. The traceback is
    logged at debug level."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            # The client hung up while its request was still arriving: nothing here failed.
            self.state.gateway.router.counters["clients_gone"] += 1
            log.info("a client hung up during its request %s %s", scope["method"], scope["path"])
        except Exception as exc:
            if scope["type"] != "http":
                raise
            gateway: Gateway = self.state.gateway
            gateway.router.counters["proxy_failures"] += 1
            log.error(
                "the proxy failed on %s %s: %s", scope["method"], scope["path"], failure_line(exc)
            )
            log.debug("the failure's traceback", exc_info=exc)
            # Answered with a 500 when nothing was sent yet; otherwise the server closes the
            # connection of the answer left unfinished.


def open_proxy_guard(gateway: Gateway) -> list[Middleware]:
    """Host and Origin checked on a proxy with no client keys (see router.proxy.guard)."""
    if not gateway.access.open:
        return []
    settings = gateway.settings
    return [
        Middleware(
            OpenProxyGuard,
            allowed_hosts=settings.allowed_hosts,
            cors_origins=settings.cors_origins,
            counters=gateway.router.counters,
        )
    ]


def create_app(
    router: ModelRouter,
    provider: Provider,
    env_keys: Sequence[str] = (),
    admin_key: str | None = None,
) -> ProxyApp:
    """The ASGI app; the caller owns (opens and closes) the router and the provider. Client keys
    are proxy.client_keys plus `env_keys` (CRABBOT_PROXY_KEYS); `admin_key`
    (CRABBOT_PROXY_ADMIN_KEY) opens the /admin endpoints."""
    gateway = Gateway(router, provider, env_keys)
    chat = ChatEndpoint(gateway)
    embeddings = EmbeddingsEndpoint(gateway)
    responses = ResponsesEndpoint(gateway)
    catalog = CatalogEndpoint(gateway)
    status = StatusEndpoint(gateway)
    admin = AdminEndpoint(gateway, admin_key)
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
    # Under /v1 too: a client whose base URL ends in /v1 reaches them like the rest.
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/admin/routing/stats", admin.stats, methods=["GET"]),
            Route(f"{prefix}/admin/routing/mode", admin.mode, methods=["POST"]),
            Route(f"{prefix}/admin/context/reset", admin.reset, methods=["POST"]),
            Route(f"{prefix}/admin/forget", admin.forget, methods=["POST"]),
        ]
    middleware = [
        Middleware(RequestMetrics, metrics=gateway.metrics),  # outermost: counts every answer
        *open_proxy_guard(gateway),
        *cors_middleware(gateway.settings.cors_origins),
    ]
    app = ProxyApp(routes=routes, exception_handlers=exception_handlers(), middleware=middleware)
    app.state.gateway = gateway
    return app
