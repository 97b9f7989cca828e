"""What a proxy with no client keys checks before anything else: the Host a request names
(loopback names, IP literals, or proxy.allowed_hosts: a web page that rebinds its own name to
127.0.0.1 is refused) and the Origin a browser sends (only proxy.cors_origins, or the proxy's
own origin: a page elsewhere cannot make the browser post to it)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from router.counters import Counters
from router.proxy.errors import ProxyError

log = logging.getLogger(__name__)

ANY = "*"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def host_name(host: str) -> str:
    """The name in a Host header, without its port: "[::1]:8888" -> "::1"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """A Host a browser on this machine could only send for this proxy: a loopback name
    (localhost, *.localhost), an IP literal (no DNS, so no rebinding), or one configured."""
    name = host_name(host)
    if ANY in allowed or name in (entry.lower() for entry in allowed):
        return True
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def origin_allowed(origin: str, host: str | None, cors_origins: Sequence[str]) -> bool:
    """A browser's Origin may call: one of proxy.cors_origins, or the proxy's own origin."""
    if ANY in cors_origins or origin in cors_origins:
        return True
    scheme, _, rest = origin.partition("://")
    return host is not None and scheme in ("http", "https") and rest.lower() == host.lower()


class OpenProxyGuard:
    """ASGI middleware of a keyless proxy: a 400 for a Host it does not answer to, a 403 for a
    cross-origin request from an origin not in proxy.cors_origins; both counted
    (hosts_refused, origins_refused)."""

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Sequence[str],
        cors_origins: Sequence[str],
        counters: Counters,
    ) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)
        self.cors_origins = list(cors_origins)
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        origin = headers.get("origin")
        error: ProxyError | None = None
        if host is not None and not host_allowed(host, self.allowed_hosts):
            self.counters["hosts_refused"] += 1
            log.info("refused a request for host %.100r (not in proxy.allowed_hosts)", host)
            error = ProxyError(
                400,
                "this proxy has no client keys and answers only to loopback names and IP"
                " addresses: add the name to proxy.allowed_hosts",
                code="host_not_allowed",
            )
        elif origin is not None and not origin_allowed(origin, host, self.cors_origins):
            self.counters["origins_refused"] += 1
            log.info("refused a request from origin %.100r (not in proxy.cors_origins)", origin)
            error = ProxyError(
                403,
                "this proxy has no client keys and takes no requests from web pages of other"
                " origins: add the origin to proxy.cors_origins",
                code="origin_not_allowed",
            )
        if error is not None:
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
