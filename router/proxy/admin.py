"""The proxy's admin endpoints, for a bot or an operator on another host: the routing stats and
mode (the admin key, CRABBOT_PROXY_ADMIN_KEY, in X-Crabbot-Admin-Key) and a conversation's context
reset (a client in its own namespace; the admin key in any)."""

from __future__ import annotations

import dataclasses
import hmac
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router.analytics import stats as routing_stats
from router.analytics.cost import cost_report
from router.proxy.access import Caller
from router.proxy.errors import ProxyError, bad_request
from router.proxy.gateway import Gateway
from router.proxy.json_body import load_json
from router.proxy.request import read_body, session_key_of
from router.taxonomy import MODES, as_mode

log = logging.getLogger(__name__)

ADMIN_HEADER = "x-crabbot-admin-key"
ADMIN_KEY_ENV = "CRABBOT_PROXY_ADMIN_KEY"
DAY_S = 24 * 3600
STATS_FLUSH_S = 2.0  # the stats wait this long for rows still queued
ADMIN_BODY_BYTES = 16 * 1024


def admin_refused(message: str) -> ProxyError:
    return ProxyError(401, message, code="invalid_admin_key")


def no_admin_key() -> ProxyError:
    return ProxyError(
        403,
        f"this proxy has no admin key: set {ADMIN_KEY_ENV} in its environment to use /admin",
        type_="permission_error",
        code="admin_key_not_set",
    )


class AdminKey:
    """The admin key, compared in constant time; never logged, never echoed."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret.strip().encode() if secret and secret.strip() else None

    @property
    def configured(self) -> bool:
        return self._secret is not None

    def offered(self, request: Request) -> bool:
        return bool(request.headers.get(ADMIN_HEADER, "").strip())

    def valid(self, request: Request) -> bool:
        """True for the right key; a 403 when none is configured, a 401 for a wrong one."""
        if self._secret is None:
            raise no_admin_key()
        given = request.headers.get(ADMIN_HEADER, "").strip().encode()
        if not given:
            return False
        if not hmac.compare_digest(given, self._secret):
            raise admin_refused("Incorrect admin key provided.")
        return True

    def require(self, request: Request) -> None:
        if not self.valid(request):
            raise admin_refused(f"send the admin key as '{ADMIN_HEADER.title()}: <key>'")


def summary_json(summary: routing_stats.Summary, cost: str | None) -> dict[str, Any]:
    return dataclasses.asdict(summary) | {"cost": cost}


class AdminEndpoint:
    """GET /admin/routing/stats, POST /admin/routing/mode, POST /admin/context/reset."""

    def __init__(self, gateway: Gateway, admin_key: str | None) -> None:
        self.gateway = gateway
        self.key = AdminKey(admin_key)

    def _check(self, request: Request) -> None:
        try:
            self.key.require(request)
        except ProxyError as error:
            self.gateway.router.counters["admin_refused"] += 1
            log.info("refused an admin request to %s: %s", request.url.path, error.code)
            raise

    async def _body(self, request: Request) -> dict[str, Any]:
        body = load_json(await read_body(request, ADMIN_BODY_BYTES))
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        return body

    async def stats(self, request: Request) -> Response:
        """The proxy's own routing stats: the last 24 h and all time, as data."""
        self._check(request)
        router = self.gateway.router
        await router.log.flush(STATS_FLUSH_S)  # the requests answered a moment ago count too
        now = time.time()
        windows = []
        for title, since in (("last 24 h", now - DAY_S), ("all time", None)):
            summary = await routing_stats.summary(router.conn, since)
            cost = (
                (await cost_report(router.conn, router.config, since)).line()
                if summary.total
                else None
            )
            windows.append({"title": title} | summary_json(summary, cost))
        privacy = router.config.privacy
        kept = (
            f"prompt text {privacy.prompt_days:g} d" if privacy.store_prompts else "no prompt text"
        )
        categorizer = None
        if router.categorizer is None:
            categorizer = router.categorizer_missing or "disabled in config"
        return JSONResponse(
            {
                "mode": router.mode,
                "taxonomy_version": router.taxonomy.version,
                "pool_size": router.pool_size,
                "categorizer_off": categorizer,
                "counters": {name: n for name, n in sorted(router.counters.items()) if n},
                "retention": f"{router.retention.line()}; kept: {kept}",
                "windows": windows,
            }
        )

    async def mode(self, request: Request) -> Response:
        """Set the routing mode this proxy (and every process on its database) routes with."""
        self._check(request)
        body = await self._body(request)
        mode = as_mode(body.get("mode")) if isinstance(body.get("mode"), str) else None
        if mode is None:
            raise bad_request(f"mode must be one of {', '.join(MODES)}", "mode")
        router = self.gateway.router
        previous = await router.set_mode(mode)
        log.info("routing mode set to %s through the admin endpoint (was %s)", mode, previous)
        return JSONResponse({"mode": router.mode, "previous": previous})

    async def reset(self, request: Request) -> Response:
        """/reset of a conversation: a client's in its own namespace (its key's), or, with the
        admin key, in the namespace the body names."""
        gateway = self.gateway
        admin = self.key.offered(request)
        if admin:  # a wrong key, or none configured, is refused, not taken for a client's
            self._check(request)
        body = await self._body(request)
        session = body.get("session_key")
        if not isinstance(session, str) or not session.strip():
            raise bad_request("session_key must be a non-empty string", "session_key")
        session_key = session_key_of(session, None)
        namespace = body.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise bad_request("namespace must be a string", "namespace")
        if admin and namespace is not None:
            caller = Caller(None, namespace)
        else:
            caller = gateway.access.identify(request)  # a 401 without a valid client key
            if namespace is not None and namespace != caller.namespace:
                gateway.router.counters["admin_refused"] += 1
                raise ProxyError(
                    403,
                    "a client key resets only its own conversations: leave out namespace, or"
                    " send the admin key",
                    type_="permission_error",
                    code="namespace_not_allowed",
                )
        conv_key = caller.conv_key(session_key)
        assert conv_key is not None
        had_context = await gateway.router.forget(conv_key)
        return JSONResponse(
            {"namespace": caller.namespace, "session_key": session_key, "had_context": had_context}
        )
