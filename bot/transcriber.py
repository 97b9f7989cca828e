"""Voice messages to text: Groq's Whisper through the groq SDK's async client, the language
detected by the model; failures become one TranscriptionError with a short reason."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import VoiceSettings
from router.errors import ReasonError, sdk_error_reason

if TYPE_CHECKING:
    import groq

log = logging.getLogger(__name__)

NO_KEY_REPLY = "Voice messages need a Groq key: set GROQ_API_KEY where crabbot runs."


class TranscriptionError(ReasonError):
    """Whisper gave no usable transcript."""


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    latency_ms: float


class Transcriber:
    """One client per process; `configured` is False without a Groq key."""

    def __init__(self, settings: VoiceSettings, api_key: str | None) -> None:
        self.settings = settings
        self.client: groq.AsyncGroq | None = None
        if api_key and settings.enabled:
            import groq  # only a configured transcriber pays for the SDK's import

            self._groq = groq
            self.client = groq.AsyncGroq(
                api_key=api_key,
                base_url=settings.base_url,
                timeout=settings.timeout_s,
                max_retries=1,
            )

    @property
    def configured(self) -> bool:
        return self.client is not None

    async def transcribe(self, data: bytes, filename: str) -> Transcript:
        if self.client is None:
            raise TranscriptionError("transcription: no Groq key")
        started = time.perf_counter()
        try:
            response = await self.client.audio.transcriptions.create(
                file=(filename, data),
                model=self.settings.model,
                response_format="verbose_json",  # also names the language it heard
                temperature=0.0,
            )
        except self._groq.APIError as exc:
            raise TranscriptionError(sdk_error_reason("transcription", self._groq, exc)) from exc
        latency_ms = (time.perf_counter() - started) * 1000
        text = (response.text or "").strip()
        if not text:
            raise TranscriptionError("transcription: nothing heard")
        language = getattr(response, "language", None)
        return Transcript(text, language, latency_ms)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
