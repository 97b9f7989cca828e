"""The proxy server: open the router and the provider client, and serve the OpenAI-compatible app
with uvicorn until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn
from starlette.applications import Starlette

from router.builder import open_router
from router.config import ProxySettings, RouterConfig, Secrets
from router.counters import Counters
from router.pool.seed import ProgressCallback
from router.proxy.access import Access
from router.proxy.app import create_app
from router.proxy.limits import Limits, limited_protocol
from router.proxy.provider import Provider
from router.router import ModelRouter


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts, so port 0 works (tests) and several
    worker processes can serve one socket."""
    # proto must say TCP: asyncio turns Nagle off (TCP_NODELAY) only on sockets that do, and
    # with Nagle on every response waits ~40 ms for the client's delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def base_url(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/v1"


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handling. uvicorn would catch SIGINT and SIGTERM
    while it serves and raise them again once stopped, and SIGTERM's default action then ends
    the process before the router closes (the routing log's last rows, the provider client):
    the process running the proxy handles the signals itself (see `stop_on_signals`)."""

    on_shutdown: Callable[[], None] | None = None  # called as the server begins to stop

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        await super().shutdown(sockets)


class ProxyServer:
    """A uvicorn server for the app on a socket bound before start: its own, or `sock` (a
    worker's share of the socket its parent bound)."""

    def __init__(
        self,
        app: Starlette,
        host: str,
        port: int,
        access_log: bool = False,
        sock: socket.socket | None = None,
    ) -> None:
        self.host = host
        self._socket = sock if sock is not None else bind_socket(host, port)
        self.port: int = self._socket.getsockname()[1]
        # The proxy's app has a gateway (settings, counters); any other app gets the defaults.
        gateway = getattr(app.state, "gateway", None)
        settings = gateway.settings if gateway is not None else ProxySettings()
        counters = gateway.router.counters if gateway is not None else Counters()
        config = uvicorn.Config(
            app,
            http=limited_protocol(Limits.from_settings(settings), counters),
            lifespan="off",
            access_log=access_log,
            log_level="info" if access_log else "warning",
            timeout_graceful_shutdown=5,
            timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]
        )
        self.server = _Server(config)
        if gateway is not None:
            self.server.on_shutdown = gateway.stop_begun
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return base_url(self.host, self.port)

    async def start(self) -> ProxyServer:
        self._task = asyncio.create_task(self.server.serve(sockets=[self._socket]))
        try:
            while not self.server.started:
                if self._task.done():
                    await self._task  # raises the reason it could not start
                    raise RuntimeError("the proxy server stopped before it started")
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:  # stopped while starting: the server stops too
            self.server.should_exit = True
            await self._task
            raise
        return self

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    def request_stop(self) -> None:
        """Stop taking requests and finish the open ones; asked twice, stop at once."""
        if self.server.should_exit:
            self.server.force_exit = True
        self.server.should_exit = True

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.wait()
        self._socket.close()


class GracefulStop:
    """Stops the proxy the current task runs: before it serves (the pool may still be seeding)
    by cancelling its start; once it serves by letting open requests finish, so the router
    closes (the routing log's last rows) before the process exits. Call it to stop."""

    def __init__(self) -> None:
        main = asyncio.current_task()
        assert main is not None
        self._main = main
        self.server: ProxyServer | None = None  # set once it serves
        self.asked = False
        self.signals: list[int] = []

    def __call__(self, signum: int | None = None) -> None:
        self.asked = True
        if signum is not None:
            self.signals.append(signum)
        if self.server is None:
            self._main.cancel()
        else:
            self.server.request_stop()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[GracefulStop]:
    """SIGINT and SIGTERM stop the proxy gracefully (a second one at once; see `_Server`)."""
    loop = asyncio.get_running_loop()
    stop = GracefulStop()
    handled: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop, signum)
            handled.append(signum)
        except NotImplementedError:  # Windows: Ctrl-C raises KeyboardInterrupt instead
            pass
    try:
        yield stop
    finally:
        for handled_signal in handled:
            loop.remove_signal_handler(handled_signal)


def check_settings(config: RouterConfig, secrets: Secrets) -> Provider:
    """The provider client, once [proxy] is known to be usable: a proxy with no provider, or
    with an allowed-models rule for a key label no key has, stops here, loading nothing."""
    settings = config.proxy
    Access(settings, config.models, [*settings.client_keys, *secrets.proxy_client_keys()])
    return Provider.from_settings(settings, secrets)


async def serve(
    config: RouterConfig,
    secrets: Secrets | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    sock: socket.socket | None = None,
    progress: ProgressCallback | None = None,
    on_ready: Callable[[ProxyServer, ModelRouter], None] | None = None,
) -> None:
    """Run the proxy until the server stops (Ctrl-C); the router and client are closed after.
    It listens on `sock` when given (a worker's), else binds host and port."""
    secrets = secrets or Secrets()
    settings = config.proxy
    provider = check_settings(config, secrets)
    try:
        router = await open_router(config, secrets, progress=progress)
    except BaseException:
        await provider.close()
        raise
    app = create_app(router, provider, secrets.proxy_client_keys(), secrets.crabbot_proxy_admin_key)
    try:
        server = ProxyServer(
            app,
            host or settings.host,
            settings.port if port is None else port,
            settings.access_log,
            sock,
        )
        await server.start()
        if on_ready is not None:
            on_ready(server, router)
        await server.wait()
    finally:
        await app.state.gateway.settled()  # the last usage writes, before the database closes
        await provider.close()
        await router.close()
