"""The cluster's fake upstream on one host: the provider (OpenAI chat completions, answered at
once, as scripts/instant_provider.py does) and the categorizer (Groq's wire format). The
categorizer labels a message containing PROBE as coding at 0.95 (above pool.min_llm_confidence:
it is learned) and anything else as casual at 0.7 (below it: the load teaches nothing), so the
one label the benchmark teaches is the one it watches spread.

    python scripts/cluster_upstream.py --host 10.77.0.3 --port 9000"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web
from instant_provider import completions
from scripted_groq import completion

PROBE = "LEARN-PROBE"
READY = "cluster upstream on "


def categorize(body: dict[str, object]) -> str:
    """The categorizer's answer for a request: the probe's label, or a label too unsure to learn."""
    messages = body.get("messages")
    current = ""
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        current = str(messages[-1].get("content", "")).rpartition("[Current message:")[2]
    if PROBE in current:
        return json.dumps({"category": "coding", "confidence": 0.95})
    return json.dumps({"category": "casual", "confidence": 0.7})


async def categorizer(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response(completion(body, categorize(body)))


async def serve(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/openai/v1/chat/completions", categorizer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024).start()
    print(f"{READY}http://{host}:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
