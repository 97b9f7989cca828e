"""Start an aiohttp.web application on a free 127.0.0.1 port and stop it again."""

from __future__ import annotations

from typing import Any

from aiohttp import web


class LocalServer:
    def __init__(self, app: web.Application, **runner_options: Any) -> None:
        self.app = app
        self.runner = web.AppRunner(app, **runner_options)
        self.port = 0

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()
