"""The benchmarks' clients of the proxy: the openai SDK, as an application calls it, and a raw
aiohttp client, a load generator that leaves the shared machine's cores to the proxy."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from openai import AsyncOpenAI

API_KEY = "bench"


@dataclass(frozen=True)
class Reply:
    """One chat completion as the client saw it: its time, and the proxy's routing time (the
    X-Crabbot-Routing-Ms header; None for a request that was not routed)."""

    total_ms: float
    routing_ms: float | None


class ChatClient(Protocol):
    async def chat(self, model: str, text: str) -> Reply: ...

    async def close(self) -> None: ...


class SdkClient:
    """The openai SDK (`with_raw_response`, for the headers): 2.5-5 ms of CPU a request on this
    machine, taken from the cores the proxy runs on."""

    kind = "openai SDK"

    def __init__(self, base_url: str) -> None:
        self._client = AsyncOpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)

    async def chat(self, model: str, text: str) -> Reply:
        started = time.perf_counter()
        raw = await self._client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": text}]
        )
        raw.parse()
        return Reply((time.perf_counter() - started) * 1000, routing_of(raw.headers))

    async def close(self) -> None:
        await self._client.close()


class RawClient:
    """A load generator's client: the JSON body posted with aiohttp on one kept-alive
    connection, the answer read whole and parsed; 0.2-0.7 ms of CPU a request, so the proxy
    gets the cores that clients on other machines would leave it."""

    kind = "raw HTTP"

    def __init__(self, base_url: str) -> None:
        self._url = f"{base_url.rstrip('/')}/chat/completions"
        # Made in a running event loop, as aiohttp wants: the benchmarks make clients there.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )

    async def chat(self, model: str, text: str) -> Reply:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}]})
        started = time.perf_counter()
        async with self._session.post(self._url, data=body) as response:
            payload = await response.read()
        if response.status != 200:
            raise RuntimeError(f"the proxy answered {response.status}: {payload[:300]!r}")
        json.loads(payload)
        return Reply((time.perf_counter() - started) * 1000, routing_of(response.headers))

    async def close(self) -> None:
        await self._session.close()


def routing_of(headers: Mapping[str, str]) -> float | None:
    value = headers.get("x-crabbot-routing-ms")
    return None if value is None else float(value)


MakeClient = Callable[[str], ChatClient]  # a client of the proxy at this base URL
CLIENTS: dict[str, MakeClient] = {"raw": RawClient, "sdk": SdkClient}
