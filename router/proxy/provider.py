"""The provider behind the proxy: one aiohttp session posting the client's body (model replaced)
to the provider's chat completions (or responses, embeddings), relaying its raw answer (JSON, or
an SSE stream event by event) within the configured time limits and retries, its errors and
answers scrubbed of secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from yarl import URL

from router.config import ConfigError, ProxySettings, Secrets
from router.errors import STREAM_OPTIONS, refuses_stream_options
from router.proxy.access import parse_keys
from router.proxy.errors import ProxyError, provider_failed, provider_timeout
from router.proxy.redact import Redactor
from router.proxy.sse import ProviderStream
from router.proxy.usage import Usage, usage_of

__all__ = ["HOP_HEADER", "Provider", "ProviderStream", "Usage", "failure", "usage_of"]

log = logging.getLogger(__name__)

# Sent on every forwarded request; a proxy that receives it is talking to itself.
HOP_HEADER = "X-Crabbot-Proxy-Hop"
# Provider answers that are about the client's request, so the client should see them as they are.
RELAYED_STATUSES = frozenset({400, 404, 413, 422, 429})
OPENAI_BASE_URL = "https://api.openai.com/v1"
# Connections kept to the provider, as many as the openai SDK allows.
MAX_CONNECTIONS = 1000


def failure(exc: BaseException) -> ProxyError:
    """The reply for a failed provider call; never carries the provider's key or auth message."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, TimeoutError):
        return provider_timeout("the provider did not answer in time")
    if isinstance(exc, aiohttp.ClientError):
        return provider_failed("could not reach the provider")
    return provider_failed(f"the provider call failed ({type(exc).__name__})")


def rate_limit_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    """Retry-After and x-ratelimit-* as the provider sent them, for the client to back off by."""
    return {
        name: value
        for name, value in response.headers.items()
        if name.lower() in ("retry-after", "retry-after-ms")
        or name.lower().startswith("x-ratelimit-")
    }


def retry_after_s(headers: dict[str, str]) -> float | None:
    """The wait a provider asked for (retry-after-ms, or Retry-After in seconds or as a date)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
        if "retry-after" in lowered:
            value = lowered["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                when = parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
    except (ValueError, TypeError):
        return None
    return None


def env_proxy(url: str) -> dict[str, Any]:
    """The HTTP(S)_PROXY the environment sets for `url` (NO_PROXY heeded), as the openai SDK
    honoured it: looked up once, as aiohttp's trust_env would cost ~0.1 ms on every request."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return {}
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy:
        return {}
    address = URL(proxy)
    return {"proxy": address.with_user(None), "proxy_auth": aiohttp.BasicAuth.from_url(address)}


class _Retryable(Exception):
    """One attempt's failure that another attempt may get past."""

    def __init__(self, error: ProxyError, wait_s: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.wait_s = wait_s


class Provider:
    """Forwards checked requests with a fixed model name; the client's own keys never pass."""

    def __init__(
        self, base_url: str, api_key: str | None, settings: ProxySettings, redact: Redactor
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self.redact = redact
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": "crabbot-proxy",
            HOP_HEADER: "1",
        }
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None
        self._via: dict[str, Any] = {}
        # Streamed answers ask for their token counts until the provider refuses to give them.
        self.asks_usage = True

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
        # Provider text is scrubbed of every key the proxy holds, before anyone sees it.
        clients = parse_keys([*settings.client_keys, *secrets.proxy_client_keys()])
        redact = Redactor([key, *(client.secret.decode() for client in clients)])
        return cls(base_url or OPENAI_BASE_URL, key, settings, redact)

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop it is made in.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.settings.connect_timeout_s
                ),
            )
            self._via = env_proxy(self.base_url)
        return self._session

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The provider's JSON answer to `body` posted to `path`, raw and parsed."""
        deadline = asyncio.get_running_loop().time() + self.settings.total_timeout_s
        response = await self._post(path, body, deadline)
        try:
            async with asyncio.timeout_at(deadline):
                raw = await response.read()
        except TimeoutError:
            raise provider_timeout("the provider's answer ran past the total timeout") from None
        except aiohttp.ClientError:
            raise provider_failed("the provider's answer broke off") from None
        finally:
            response.release()
        raw = self.redact.known_in(raw)  # a provider that echoes its key must not relay it
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise provider_failed("the provider's answer is not JSON") from None
        if not isinstance(data, dict):
            raise provider_failed("the provider's answer is not a JSON object")
        return raw, data

    async def open_stream(
        self,
        model: str,
        body: dict[str, Any],
        wants_usage: bool,
        on_usage_refused: Callable[[], None] = lambda: None,
    ) -> ProviderStream:
        """Start a streamed answer; its status and first event are known (and failures raised)
        before it returns. Usage is asked for, and relayed only when the client asked, until a
        provider refuses `stream_options` the client did not send: then the request goes again
        without it, and once that is answered (an error that only quoted the words is not a
        refusal), later ones do not ask (`on_usage_refused` is called when they stop)."""
        request = body | {"model": model, "stream": True}
        if not self.asks_usage:
            return await self.stream("/chat/completions", request, wants_usage)
        options = dict(body.get(STREAM_OPTIONS) or {}) | {"include_usage": True}
        try:
            asked = request | {STREAM_OPTIONS: options}
            return await self.stream("/chat/completions", asked, wants_usage)
        except ProxyError as error:
            refused = refuses_stream_options(error.status, error.message, error.param)
            if body.get(STREAM_OPTIONS) or not refused:  # the client's own ask is its to fix
                raise
        stream = await self.stream("/chat/completions", request, wants_usage)
        if self.asks_usage:  # said once, though requests in flight then each asked again
            self.asks_usage = False
            on_usage_refused()
            log.warning("the provider refuses stream_options: streamed answers go without counts")
        return stream

    async def stream(
        self,
        path: str,
        body: dict[str, Any],
        relay_usage_chunk: bool = True,
        read_usage: Callable[[Any], Usage | None] = usage_of,
    ) -> ProviderStream:
        """Post `body` (which asks for a stream) to `path` and start its SSE answer, as
        `open_stream` does; `read_usage` picks the usage out of an event's data."""
        deadline = asyncio.get_running_loop().time() + self.settings.total_timeout_s
        response = await self._post(path, body, deadline)
        stream = ProviderStream(
            response,
            relay_usage_chunk,
            self.settings.first_byte_timeout_s,
            deadline,
            read_usage,
            scrub=self.redact.known_in,
        )
        try:
            await stream.start()
        except BaseException:
            await stream.close()
            raise
        return stream

    async def _post(
        self, path: str, body: dict[str, Any], deadline: float
    ) -> aiohttp.ClientResponse:
        """The provider's 2xx response, its body unread, after up to proxy.max_retries retries;
        a ProxyError otherwise."""
        data = json.dumps(body).encode()
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                return await self._attempt(self.base_url + path, data, deadline)
            except _Retryable as failed:
                wait = failed.wait_s
                if wait is None:
                    wait = min(0.5 * 2**attempt, self.settings.max_retry_wait_s)
                if (
                    attempt >= self.settings.max_retries
                    or wait > self.settings.max_retry_wait_s
                    or loop.time() + wait >= deadline
                ):
                    raise failed.error from None
                attempt += 1
                log.info(
                    "provider call failed (%s); retry %d of %d in %.2f s",
                    failed.error.logged(),
                    attempt,
                    self.settings.max_retries,
                    wait,
                )
                await asyncio.sleep(wait)

    async def _attempt(self, url: str, data: bytes, deadline: float) -> aiohttp.ClientResponse:
        loop = asyncio.get_running_loop()
        first_byte = self.settings.first_byte_timeout_s
        started = min(loop.time() + first_byte, deadline)
        try:
            async with asyncio.timeout_at(started):
                response = await self._client().post(
                    url, data=data, headers=self._headers, **self._via
                )
        except aiohttp.ConnectionTimeoutError:
            error = provider_timeout(
                f"could not connect to the provider in {self.settings.connect_timeout_s:g} s"
            )
            raise _Retryable(error) from None
        except TimeoutError:
            waited = min(first_byte, self.settings.total_timeout_s)
            raise provider_timeout(f"the provider did not answer in {waited:g} s") from None
        except aiohttp.ClientError:
            raise _Retryable(provider_failed("could not reach the provider")) from None
        if response.status < 400:
            return response
        try:
            error = await self._error(response, deadline)
        finally:
            response.release()
        if response.status == 429 or response.status >= 500:
            raise _Retryable(error, retry_after_s(rate_limit_headers(response)))
        raise error

    async def _error(self, response: aiohttp.ClientResponse, deadline: float) -> ProxyError:
        """The reply for a provider's error status: its own message (scrubbed) and rate-limit
        headers for statuses about the client's request, a plain 502 otherwise."""
        status = response.status
        if status not in RELAYED_STATUSES:
            return provider_failed(f"the provider answered HTTP {status}")
        try:
            async with asyncio.timeout_at(deadline):
                raw = await response.read()
            parsed = json.loads(raw)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            parsed = None
        body = parsed.get("error", parsed) if isinstance(parsed, dict) else None
        body = body if isinstance(body, dict) else {}

        def text(key: str) -> str | None:
            value = body.get(key)
            return self.redact(value) if isinstance(value, str) else None

        return ProxyError(
            status,
            text("message") or f"the provider refused the request ({status})",
            type_=text("type") or "invalid_request_error",
            code=text("code"),
            param=text("param"),
            headers=rate_limit_headers(response),
            provider_words=True,
        )

    async def model(self, name: str) -> dict[str, Any] | None:
        """The provider's entry for one model (`GET /models/{name}`); None when it has no such
        model. One attempt within the first-byte timeout: a lookup is not worth a wait."""
        url = f"{self.base_url}/models/{urllib.parse.quote(name, safe='')}"
        try:
            async with asyncio.timeout(self.settings.first_byte_timeout_s):
                async with self._client().get(url, headers=self._headers, **self._via) as response:
                    if response.status == 404:
                        return None
                    if response.status >= 400:
                        raise provider_failed(f"the provider answered HTTP {response.status}")
                    data = json.loads(await response.read())
        except TimeoutError:
            raise provider_timeout("the provider did not answer in time") from None
        except (aiohttp.ClientError, ValueError):
            raise provider_failed("could not look the model up at the provider") from None
        return data if isinstance(data, dict) and data.get("id") == name else None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
