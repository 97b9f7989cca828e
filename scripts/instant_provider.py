"""An OpenAI-compatible provider for the benchmarks: POST /v1/chat/completions answered at once
(JSON, with usage) on a free 127.0.0.1 port; prints its base URL, then serves until killed.

    python scripts/instant_provider.py"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


async def completions(request: web.Request) -> web.Response:
    model = str((await request.json()).get("model"))
    message = {"role": "assistant", "content": f"answer from {model}"}
    return web.json_response(
        {
            "id": "chatcmpl-instant",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": USAGE,
        }
    )


async def serve() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"http://127.0.0.1:{runner.addresses[0][1]}/v1", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve())
