"""CORS for the proxy: off unless proxy.cors_origins lists the web origins that may call it."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

# Headers a page may read from a cross-origin answer: the decision, and how to back off.
EXPOSED_HEADERS = (
    "X-Crabbot-Source",
    "X-Crabbot-Model",
    "X-Crabbot-Tier",
    "X-Crabbot-Category",
    "X-Crabbot-Decision-Id",
    "X-Crabbot-Routing-Ms",
    "Retry-After",
    "X-Request-Id",
    *(
        f"X-Ratelimit-{kind}-{what}"
        for kind in ("Limit", "Remaining", "Reset")
        for what in ("Requests", "Tokens")
    ),
)


def cors_middleware(origins: Sequence[str]) -> list[Middleware]:
    """Starlette's CORSMiddleware for `origins` (["*"]: any), answering preflight OPTIONS; none
    when the list is empty. No credentials: the key travels in the Authorization header."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
        )
    ]
