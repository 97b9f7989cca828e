"""One incoming message as the agent reads it: the words, the message it replies to, the images,
and how each shows to the router, to the model and in memory."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from router.text import readable, storable

QUOTE_LIMIT = 4000  # characters of a quoted message the model and the router see
MEMORY_QUOTE_LIMIT = 120  # memory keeps a short reminder of what was quoted
CAPTION_LIMIT = 80


# The line a voice message's answer is shown under (bot/voice.py heading): not the answer's.
_VOICE_HEADING = re.compile(r"\A>? ?\[voice[^\]\n]*\][^\n]*\n+")


def answer_shown(text: str) -> str:
    """A quote of the bot's own answer without the voice heading it was shown under."""
    return _VOICE_HEADING.sub("", text).strip()


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Quote:
    """The message replied to: its author's name (None when unknown), its text, and its author's
    user key as the adapter keys a sender (None for the bot's own message), so that person's
    erasure reaches what memory keeps of the quote."""

    author: str | None
    text: str
    mine: bool = False  # the bot's own message (its answer)
    user_key: str | None = None

    @classmethod
    def own_answer(cls, text: str) -> Quote:
        """A quote of the bot's own answer, without the voice heading it was shown under."""
        return cls("crabbot", answer_shown(text) or text.strip(), mine=True)


@dataclass(frozen=True)
class Image:
    data: bytes
    mime_type: str

    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode()}"


@dataclass(frozen=True)
class Incoming:
    """`text` is what the person wrote: a message, a photo's caption, a voice transcript."""

    text: str
    quote: Quote | None = None
    images: tuple[Image, ...] = ()
    kind: str = "text"  # "text", "photo" or "voice": how memory names what was sent
    heading: str | None = None  # shown above the reply ("[voice 0:12] what was heard")
    transcription_ms: float | None = None  # a voice message's transcription time

    def __post_init__(self) -> None:
        # A terminal's undecodable input arrives as lone surrogates, which no database or model
        # API takes: shown as U+FFFD, as a UTF-8 decoder shows bytes it cannot read.
        object.__setattr__(self, "text", storable(self.text))

    def is_empty(self) -> bool:
        """No images and nothing to read (zero-width, whitespace or control characters only)."""
        return not readable(self.routing_text()) and not self.images

    def routing_text(self) -> str:
        """What the router reads: the words (a bare reply: the quoted message itself). Empty
        for a photo with no caption, even one that replies to a message: a photo alone asks
        about the photo (routing.image_tier), the quoted message is only its context for the
        model."""
        words = self.text.strip()
        if words or self.images or self.quote is None:
            return words
        return self.quote.text.strip()[:QUOTE_LIMIT]

    def bare_quote(self) -> str | None:
        """The quoted message, when a bare reply (no words, no images) asks about another
        person's message: the router reads it as the request, but it is not the sender's words.
        None for a bare reply to the bot's own answer (no person's words)."""
        if self.text.strip() or self.images or self.quote is None or self.quote.mine:
            return None
        return self.quote.text.strip()[:QUOTE_LIMIT] or None

    def replied_to(self) -> str | None:
        """The quoted message, when the router reads it as the context of the words."""
        words = self.text.strip()
        if not words or self.quote is None or not self.quote.text.strip():
            return None
        return self.quote.text.strip()[:QUOTE_LIMIT]

    def model_text(self) -> str:
        """The words for the model, with the quoted message under them."""
        words = self.text.strip()
        if self.quote is None or not self.quote.text.strip():
            return words
        quoted = "\n".join(
            f"> {line}" for line in self.quote.text.strip()[:QUOTE_LIMIT].split("\n")
        )
        who = self.quote.author or "someone"
        return f"{words}\n\n(replying to {who}:)\n{quoted}".lstrip()

    def model_content(self, author: str | None) -> str | list[dict[str, Any]]:
        """The user message's content: text, or text and image parts."""
        text = self.model_text() or "(photo)"
        if author:
            text = f"{author}: {text}"
        if not self.images:
            return text
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        parts += [{"type": "image_url", "image_url": {"url": i.data_url()}} for i in self.images]
        return parts

    def headed(self, answer: str) -> str:
        """The answer as shown: under the heading, when there is one."""
        return f"{self.heading}\n\n{answer}" if self.heading else answer

    def memory_text(self) -> str:
        """What memory keeps of the sender's own words: images never, a short placeholder
        instead ("[photo: caption]")."""
        words = self.text.strip()
        if self.kind == "photo":
            words = f"[photo: {_short(words, CAPTION_LIMIT)}]" if words else "[photo]"
        elif self.kind == "voice":
            words = f"[voice] {words}"
        return words

    def memory_quote(self) -> str | None:
        """The short reminder of the quoted message memory keeps beside the words
        ('(replying to Dad: "...")'); stored apart, as it may be another person's words."""
        if self.quote is None or not self.quote.text.strip():
            return None
        who = self.quote.author or "someone"
        return f'(replying to {who}: "{_short(self.quote.text, MEMORY_QUOTE_LIMIT)}")'
