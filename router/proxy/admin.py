"""The proxy's admin endpoints, for a bot or an operator on another host: the routing stats and
mode (the admin key, CRABBOT_PROXY_ADMIN_KEY, in X-Crabbot-Admin-Key), a conversation's context
reset and a person's erasure (a client in its own namespace; the admin key in any)."""

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
from router.store.erasure import Erased, Scope
from router.taxonomy import MODES, as_mode

log = logging.getLogger(__name__)

ADMIN_HEADER = "x-crabbot-admin-key"
ADMIN_KEY_ENV = "CRABBOT_PROXY_ADMIN_KEY"
DAY_S = 24 * 3600
STATS_FLUSH_S = 2.0  # the stats wait this long for rows still queued
ADMIN_BODY_BYTES = 16 * 1024
MAX_SPEAKERS = 8  # one person's names in one erasure: their key, and names they went by


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
    """GET /admin/routing/stats, POST /admin/routing/mode, POST /admin/context/reset, POST
    /admin/forget."""

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

    def _admin_offered(self, request: Request) -> bool:
        """Whether a conversation request comes with the admin key; a wrong one, or one sent to
        a proxy with none configured, is refused, not taken for a client's."""
        admin = self.key.offered(request)
        if admin:
            self._check(request)
        return admin

    def _caller(self, request: Request, admin: bool, body: dict[str, Any], acts: str) -> Caller:
        """Whose namespace a conversation request acts in: the client key's own, or, with the
        admin key, the one the body names; a client key naming another is refused (403)."""
        namespace = body.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise bad_request("namespace must be a string", "namespace")
        if admin and namespace is not None:
            return Caller(None, namespace)
        caller = self.gateway.access.identify(request)  # a 401 without a valid client key
        if namespace is not None and namespace != caller.namespace:
            self.gateway.router.counters["admin_refused"] += 1
            raise ProxyError(
                403,
                f"a client key {acts} only in its own namespace: leave out namespace, or send"
                " the admin key",
                type_="permission_error",
                code="namespace_not_allowed",
            )
        return caller

    async def reset(self, request: Request) -> Response:
        """/reset of a conversation: a client's in its own namespace (its key's), or, with the
        admin key, in the namespace the body names."""
        admin = self._admin_offered(request)
        body = await self._body(request)
        session = _optional_name(body, "session_key")
        if session is None:
            raise bad_request("session_key must be a non-empty string", "session_key")
        session_key = session_key_of(session, None)
        caller = self._caller(request, admin, body, "resets")
        conv_key = caller.conv_key(session_key)
        assert conv_key is not None
        had_context = await self.gateway.router.forget(conv_key)
        return JSONResponse(
            {"namespace": caller.namespace, "session_key": session_key, "had_context": had_context}
        )

    async def forget(self, request: Request) -> Response:
        """/forget at the proxy: what a person said in a conversation (or a whole conversation,
        or a person everywhere) erased from the routing log, the pool and the routing context,
        as `crabbot forget --conv --user` does, in the caller's namespace (or, with the admin
        key, the one the body names). The body names them as requests do: the conversation by
        its session key (X-Session-Key), the person by their X-Crabbot-Speaker header (or the
        user message's `name`, `safety_identifier` or `user` that stood in for it); a list of
        speakers is one person known by each of those names, the counts added up."""
        admin = self._admin_offered(request)
        body = await self._body(request)
        session_key = _optional_name(body, "session_key")
        speakers = _speakers(body)
        if session_key is None and not speakers:
            raise bad_request(
                "name the conversation (session_key), the person (speaker), or both",
                "session_key",
            )
        session_key = session_key_of(session_key, None)
        caller = self._caller(request, admin, body, "erases")
        conv_key = caller.conv_key(session_key)
        scopes = [Scope(conv_key, caller.user_key(speaker)) for speaker in speakers]
        erased = Erased()
        for scope in scopes or [Scope(conv_key)]:
            erased += await self.gateway.router.erase(scope)
        log.info(
            "erased in namespace %s through the admin endpoint: %s",
            caller.namespace,
            erased.routing_line(),
        )
        return JSONResponse(
            {
                "namespace": caller.namespace,
                "session_key": session_key,
                "speaker": body.get("speaker"),
                "erased": {"prompts": erased.prompts, "pool_entries": erased.pool_entries},
            }
        )


def _speakers(body: dict[str, Any]) -> list[str]:
    """The person an erasure names: `speaker` as one name or a list of them (each a name a
    request gave them), without repeats; empty when the body leaves it out; a 400 otherwise."""
    given = body.get("speaker")
    if given is None or isinstance(given, str):
        name = _optional_name(body, "speaker")
        return [] if name is None else [name]
    if (
        not isinstance(given, list)
        or not 0 < len(given) <= MAX_SPEAKERS
        or not all(isinstance(name, str) and name.strip() for name in given)
    ):
        raise bad_request(
            f"speaker must be a non-empty string, or a list of 1 to {MAX_SPEAKERS} of them",
            "speaker",
        )
    return list(dict.fromkeys(given))


def _optional_name(body: dict[str, Any], field: str) -> str | None:
    """A body's conversation or person, as its requests spell it (not stripped); None when the
    body leaves it out; a 400 when it is not a non-blank string."""
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{field} must be a non-empty string", field)
    return value
