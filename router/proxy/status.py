"""GET /healthz (that the proxy is up, or a 503 when its database file is gone; more for a valid
key) and GET /metrics (Prometheus)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from router.proxy.gateway import Gateway
from router.proxy.metrics import CONTENT_TYPE


class StatusEndpoint:
    """GET /healthz and GET /metrics."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def healthz(self, request: Request) -> Response:
        """That the proxy is up; with a valid client key (or none configured), more. A 503
        while its SQLite file is deleted or replaced by one it cannot use (rows wait in memory);
        a crabbot database put back there is reopened first."""
        gateway = self.gateway
        lost = await gateway.router.conn.check_file()
        if lost is not None:
            return JSONResponse(
                {"status": "unhealthy", "error": f"the database file was {lost}"},
                status_code=503,
            )
        if not gateway.access.authorized(request):
            return JSONResponse({"status": "ok"})
        # The stored mode, as routing reads it: set through another process's /admin too.
        mode = await gateway.router.refresh_mode()
        return JSONResponse({"status": "ok", "mode": mode, "pool_size": gateway.router.pool_size})

    async def prometheus(self, request: Request) -> Response:
        self.gateway.authorize(request)
        return Response(self.gateway.metrics.exposition(), media_type=CONTENT_TYPE)
