"""The upstream LLM: chat completions through the openai SDK's async client, against any
OpenAI-compatible base URL, streamed or whole; failures become one UpstreamError with a short
reason."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

from bot.config import UpstreamSettings
from bot.proxy_admin import ProxyAdmin
from bot.speakers import header_safe
from router import Secrets
from router.errors import ReasonError, refuses_stream_options, sdk_error_reason

log = logging.getLogger(__name__)

AUTO_MODEL = "auto"
SESSION_HEADER = "X-Session-Key"
SPEAKER_HEADER = "X-Crabbot-Speaker"
# Local OpenAI-compatible servers (llama.cpp, Ollama, vLLM) need no key, but the SDK wants one.
PLACEHOLDER_KEY = "not-needed"
MISSING_HINT = (
    "no upstream configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for a non-OpenAI server),"
    " or upstream.base_url in the config, to get real replies"
)


class UpstreamError(ReasonError):
    """The upstream gave no usable answer; `routed` is how a routing proxy had routed it."""

    def __init__(self, reason: str, routed: Routed | None = None) -> None:
        super().__init__(reason)
        self.routed = routed


@dataclass(frozen=True)
class Routed:
    """How a routing proxy routed a request, from its X-Crabbot-* headers."""

    tier: str | None
    category: str | None
    source: str
    model: str | None


def routed_by(headers: Mapping[str, str]) -> Routed | None:
    """The proxy's decision in a response's headers; None from anything but crabbot proxy."""
    source = headers.get("x-crabbot-source")
    if not source:
        return None
    return Routed(
        tier=headers.get("x-crabbot-tier"),
        category=headers.get("x-crabbot-category"),
        source=source,
        model=headers.get("x-crabbot-model"),
    )


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int | None  # None: the server gave no count
    completion_tokens: int | None
    routed: Routed | None = None  # a routing proxy's decision (model "auto")


def is_configured(settings: UpstreamSettings, secrets: Secrets) -> bool:
    """A key or a base URL (a local server needs no key) was given, in config or environment."""
    return bool(settings.base_url or secrets.openai_base_url or secrets.openai_api_key)


class Upstream:
    """One client per process; `configured` is False when no key and no URL were given."""

    def __init__(
        self, settings: UpstreamSettings, secrets: Secrets, counters: Counter[str] | None = None
    ) -> None:
        self.settings = settings
        self.counters: Counter[str] = Counter() if counters is None else counters
        # Streamed answers ask for their token counts until the server refuses to give them.
        self.asks_usage = True
        self.base_url = settings.base_url or secrets.openai_base_url
        self.configured = is_configured(settings, secrets)
        self.has_key = bool(secrets.openai_api_key)  # else a placeholder for keyless servers
        self.client: openai.AsyncOpenAI | None = None
        # The routing proxy's admin endpoints (stats, mode, context reset), when model is "auto".
        self.proxy: ProxyAdmin | None = None
        if self.configured:
            self.client = openai.AsyncOpenAI(
                api_key=secrets.openai_api_key or PLACEHOLDER_KEY,
                base_url=self.base_url,
                timeout=settings.timeout_s,
                max_retries=settings.max_retries,
            )
            if self.auto:
                self.proxy = ProxyAdmin(self.client, secrets.crabbot_proxy_admin_key)

    @property
    def auto(self) -> bool:
        """True when the upstream routes by itself (`model = "auto"`): the bot does not route."""
        return self.settings.model == AUTO_MODEL

    @property
    def fixed_model(self) -> str | None:
        """The one model config names for every reply (anything but unset or "auto"): the bot
        does not route then either."""
        model = self.settings.model
        return model if model and model != AUTO_MODEL else None

    async def complete(
        self,
        model: str,
        messages: Sequence[ChatCompletionMessageParam],
        session_key: str | None = None,
        on_text: Callable[[str], None] | None = None,
        speaker_key: str | None = None,
    ) -> Completion:
        """One chat completion; `session_key` and `speaker_key` tell a routing proxy which
        conversation it is and who speaks (their `platform:id`), so they are sent only to a
        routing proxy (model "auto"), never to a plain provider. Streamed (`[upstream]
        stream`), `on_text` gets the answer so far after every chunk."""
        if self.client is None:
            raise UpstreamError("upstream: not configured")
        options: dict[str, Any] = {
            "model": model,
            "messages": list(messages),
            "extra_headers": self._proxy_headers(session_key, speaker_key),
        }
        if self.settings.max_tokens:
            options["max_tokens"] = self.settings.max_tokens
        try:
            if self.settings.stream:
                return await self._stream(self.client, options, on_text)
            raw = await self.client.chat.completions.with_raw_response.create(**options)
            response = raw.parse()
        except openai.APIError as exc:
            # A proxy's error answer still says how it routed the request.
            routed = (
                routed_by(exc.response.headers) if isinstance(exc, openai.APIStatusError) else None
            )
            raise UpstreamError(sdk_error_reason("upstream", openai, exc), routed) from exc
        content = response.choices[0].message.content if response.choices else None
        if not content or not content.strip():
            raise UpstreamError("upstream: empty answer")
        usage = response.usage
        return Completion(
            text=content,
            model=response.model or model,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            routed=routed_by(raw.headers),
        )

    def _proxy_headers(
        self, session_key: str | None, speaker_key: str | None
    ) -> dict[str, str] | None:
        """What a routing proxy is told beside the messages; nothing for a plain provider."""
        if not self.auto:
            return None
        named = ((SESSION_HEADER, session_key), (SPEAKER_HEADER, speaker_key))
        # What a header cannot carry ("console:奶奶") goes percent-encoded.
        return {header: header_safe(value) for header, value in named if value} or None

    async def _stream(
        self,
        client: openai.AsyncOpenAI,
        options: dict[str, Any],
        on_text: Callable[[str], None] | None,
    ) -> Completion:
        parts: list[str] = []
        model = options["model"]
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        raw = await self._open_stream(client, options)
        stream = raw.parse()
        async with stream:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage is not None:  # the last chunk, with no choices
                    prompt_tokens = chunk.usage.prompt_tokens
                    completion_tokens = chunk.usage.completion_tokens
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    parts.append(delta)
                    if on_text is not None:
                        on_text("".join(parts))
        text = "".join(parts)
        if not text.strip():
            raise UpstreamError("upstream: empty answer")
        return Completion(text, model, prompt_tokens, completion_tokens, routed_by(raw.headers))

    async def _open_stream(self, client: openai.AsyncOpenAI, options: dict[str, Any]) -> Any:
        """The streamed answer's raw response, with its token counts asked for unless the server
        refuses `stream_options`: then it is asked again without them, and once that is
        answered (an error that only quoted the words is not a refusal), never again."""
        create = client.chat.completions.with_raw_response.create
        if not self.asks_usage:
            return await create(**options, stream=True)
        try:
            return await create(**options, stream=True, stream_options={"include_usage": True})
        except openai.APIStatusError as exc:
            if not refuses_stream_options(exc.status_code, exc.message, exc.param):
                raise
        raw = await create(**options, stream=True)
        if self.asks_usage:  # said once, though requests in flight then each asked again
            self.asks_usage = False
            self.counters["stream_usage_refused"] += 1
            log.warning("the upstream refuses stream_options: streamed answers go without counts")
        return raw

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
