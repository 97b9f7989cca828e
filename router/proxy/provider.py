"""The provider behind the proxy: one AsyncOpenAI client whose raw answers (a JSON body, or an
SSE stream event by event) are relayed as they come, with the usage they report picked out."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from openai import APIConnectionError, APIStatusError, APITimeoutError, AsyncOpenAI

from router.config import ConfigError, ProxySettings, Secrets
from router.proxy.errors import ProxyError, provider_failed

log = logging.getLogger(__name__)

# Sent on every forwarded request; a proxy that receives it is talking to itself.
HOP_HEADER = "X-Crabbot-Proxy-Hop"
# Provider answers that are about the client's request, so the client should see them as they are.
RELAYED_STATUSES = frozenset({400, 404, 413, 422, 429})
NO_KEY = "no-key-set"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def usage_of(data: Any) -> Usage | None:
    """The usage block of a completion or chunk, when it has one with token counts."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


def failure(exc: Exception) -> ProxyError:
    """The reply for a failed provider call; never carries the provider's key or auth message."""
    if isinstance(exc, APIStatusError):
        if exc.status_code in RELAYED_STATUSES:
            body = exc.body if isinstance(exc.body, dict) else {}
            return ProxyError(
                exc.status_code,
                str(body.get("message") or f"the provider refused the request ({exc.status_code})"),
                type_=str(body.get("type") or "invalid_request_error"),
                code=body.get("code") if isinstance(body.get("code"), str) else None,
                param=body.get("param") if isinstance(body.get("param"), str) else None,
            )
        return provider_failed(f"the provider answered HTTP {exc.status_code}")
    if isinstance(exc, APITimeoutError):
        return provider_failed("the provider did not answer in time")
    if isinstance(exc, APIConnectionError):
        return provider_failed("could not reach the provider")
    return provider_failed(f"the provider call failed ({type(exc).__name__})")


class ProviderStream:
    """An open SSE answer: `events()` yields each event's bytes; `usage` is set once seen."""

    def __init__(self, manager: Any, response: Any, relay_usage_chunk: bool) -> None:
        self._manager = manager
        self._response = response
        self._relay_usage_chunk = relay_usage_chunk
        self.usage: Usage | None = None

    async def events(self) -> AsyncIterator[bytes]:
        lines: list[str] = []
        async for line in self._response.iter_lines():
            if line:
                lines.append(line)
                continue
            if lines:
                event = self._event(lines)
                lines = []
                if event is not None:
                    yield event
        if lines:
            event = self._event(lines)
            if event is not None:
                yield event

    def _event(self, lines: list[str]) -> bytes | None:
        """The event to relay, or None to drop it (a usage-only chunk the client did not ask
        for: the proxy asks for usage on every stream, and strict clients index choices[0])."""
        for line in lines:
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if '"usage"' not in payload:
                continue
            try:
                data = json.loads(payload)
            except json.JSONDecodeError:
                continue
            usage = usage_of(data)
            if usage is not None:
                self.usage = usage
                if not self._relay_usage_chunk and not data.get("choices"):
                    return None
        return ("\n".join(lines) + "\n\n").encode()

    async def close(self) -> None:
        await self._manager.__aexit__(None, None, None)


class Provider:
    """Forwards checked requests with a fixed model name; the client's own keys never pass."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self.client = client

    @classmethod
    def from_settings(
        cls, settings: ProxySettings, secrets: Secrets, api_key: str | None = None
    ) -> Provider:
        """The provider client; raises ConfigError when neither a key nor a base URL is set
        (the proxy would otherwise send family messages to api.openai.com with no key)."""
        key = api_key or os.environ.get(settings.api_key_env)
        base_url = settings.base_url or secrets.openai_base_url
        if not key and not base_url:
            raise ConfigError(
                f"the proxy has no provider: set {settings.api_key_env} (the variable"
                " proxy.api_key_env names), or proxy.base_url for a keyless local server"
            )
        if not key:
            log.info("%s is not set: %s gets requests with no key", settings.api_key_env, base_url)
        client = AsyncOpenAI(
            api_key=key or NO_KEY,
            base_url=base_url,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
            default_headers={HOP_HEADER: "1"},
        )
        return cls(client)

    async def complete(self, model: str, body: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The provider's JSON answer, raw and parsed."""
        try:
            # A plain POST of the client's body (the SDK's documented way to send any request):
            # the typed create() would reshape every message first, for nothing (~1 ms a request).
            raw = await self.client.post(
                "/chat/completions", cast_to=bytes, body=body | {"model": model}
            )
        except Exception as exc:
            raise failure(exc) from exc
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise provider_failed("the provider's answer is not JSON") from None
        if not isinstance(data, dict):
            raise provider_failed("the provider's answer is not a JSON object")
        return raw, data

    async def open_stream(
        self, model: str, body: dict[str, Any], wants_usage: bool
    ) -> ProviderStream:
        """Start a streamed answer; the status is known (and failures raised) before it returns."""
        # Everything the client sent goes through untouched in extra_body (the SDK would drop or
        # reshape fields it does not know); the model is replaced and usage always asked for.
        extra = {key: value for key, value in body.items() if key not in ("model", "messages")}
        extra["stream_options"] = dict(extra.get("stream_options") or {}) | {"include_usage": True}
        extra["stream"] = True
        manager = self.client.chat.completions.with_streaming_response.create(
            model=model, messages=body["messages"], extra_body=extra
        )
        try:
            response = await manager.__aenter__()
        except Exception as exc:
            raise failure(exc) from exc
        return ProviderStream(manager, response, relay_usage_chunk=wants_usage)

    async def close(self) -> None:
        await self.client.close()
