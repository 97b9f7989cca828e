"""Which request a reply to the bot's own answer is about: the question memory keeps beside the
answer quoted, so the router reads that request as the reply's context, never the answer."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.memory import Turn

# Enough of a quote to tell one answer from another; a chat client may show only a part of the
# answer (a long one is sent in pieces) and without its Markdown, so both ends are tried.
KEY_CHARS = 80
MIN_KEY_CHARS = 6  # fewer ("OK") would be found in any answer
_NOT_WORD = re.compile(r"[\W_]+")
# What memory adds around the words (Incoming.memory_text): a voice mark, a reminder of a quote.
_VOICE_MARK = "[voice] "
_QUOTE_REMINDER = re.compile(r' \(replying to [^:\n]*: "[^\n]*"\)$')


def _letters(text: str) -> str:
    """Letters and digits only: what survives Markdown becoming formatting."""
    return _NOT_WORD.sub("", text).casefold()


def answered_request(history: Sequence[Turn], quoted: str) -> Turn | None:
    """The user turn whose answer (the assistant turn stored right after it) holds `quoted`,
    newest first; None when no answer in memory does."""
    letters = _letters(quoted)
    if len(letters) < MIN_KEY_CHARS:
        return None
    keys = {letters[:KEY_CHARS], letters[-KEY_CHARS:]}
    for index in range(len(history) - 1, 0, -1):
        answer, question = history[index], history[index - 1]
        if answer.role != "assistant" or question.role != "user":
            continue
        answer_letters = _letters(answer.content)
        if any(key in answer_letters for key in keys):
            return question
    return None


def request_words(question: Turn) -> str:
    """The words of a remembered request as the router read them (without memory's marks)."""
    words = _QUOTE_REMINDER.sub("", question.content)
    return words.removeprefix(_VOICE_MARK).strip()
