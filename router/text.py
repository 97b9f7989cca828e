"""Message text: the normal form two messages share to count as the same, its hash, the text of
OpenAI-style chat messages, a reply's words apart from the message it quotes, and the request
an answer quoted in a reply answered."""

from __future__ import annotations

import hashlib
import html
import itertools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

_SPACES = re.compile(r"\s+")
# The line the bot puts between a reply's words and the quoted message (bot/incoming.py).
_REPLYING_TO = re.compile(r"^\(replying to [^\n]{0,200}:\)$")
# Letters that draw nothing although Unicode files them as letters or symbols (Hangul fillers,
# the blank Braille pattern): a message of these alone has nothing to read.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Enough of a quoted answer to tell one answer from another; a chat client may show only a part
# of it (a long one is sent in pieces) and without its Markdown, so its start, middle and end are
# tried. A quote of less than the least ("OK", "Leaves of") would be found in any answer; a
# CJK character counts as two letters.
_ANSWER_KEY_CHARS = 60
_ANSWER_KEY_LEAST = 12
_NOT_LETTERS = re.compile(r"[\W_]+")
# What Markdown shows no letters of: a code fence's language, a link's address.
_UNSHOWN_MARKDOWN = re.compile(r"```[^\n]*|\]\([^)\s]*\)")
# What the bot's memory adds around a message's words (bot/incoming.py memory_text, memory_quote):
# a voice mark, a photo's brackets, a reminder of the message it quoted.
_MEMORY_MARKS = (
    re.compile(r' \(replying to [^\n]{0,200}: "[^\n]*"\)$'),
    re.compile(r"^\[voice\] "),
)
_MEMORY_PHOTO = re.compile(r"^\[photo(?:: (.*))?\]$", re.DOTALL)


def normalize_text(text: str) -> str:
    """The form two messages must share to count as the same text."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def readable(text: str) -> bool:
    """Whether `text` has something to read: a character that is not whitespace, a control or
    format character (zero-width space and joiners, direction marks, BOM), nor a blank letter."""
    return any(
        not ch.isspace()
        and ch not in _BLANK_LETTERS
        and unicodedata.category(ch) not in ("Cc", "Cf", "Zs", "Zl", "Zp")
        for ch in text
    )


def capped(text: str, max_chars: int) -> str:
    """`text` within `max_chars`: its head and tail kept around a marker that says how many
    characters were left out (a stored prompt; the full length is recorded beside it)."""
    if len(text) <= max_chars:
        return text
    marker = f" […{len(text)} characters, cut…] "
    room = max(max_chars - len(marker), 2)
    head = room - room // 2
    return text[:head] + marker + text[len(text) - room // 2 :]


# Lone surrogates (no UTF-8 encoder takes them) and NUL (no PostgreSQL text column takes it).
UNSTORABLE = re.compile("[\ud800-\udfff\x00]")


def storable(text: str) -> str:
    """`text` with lone surrogates and NUL as U+FFFD, as a UTF-8 decoder shows bytes it cannot
    read (a terminal's undecodable input arrives as lone surrogates)."""
    return UNSTORABLE.sub("\ufffd", text)


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and "text" in part
        )
    return ""


def user_texts_backwards(
    messages: Sequence[dict[str, Any]] | None, name: str | None = None
) -> Iterator[tuple[int, str]]:
    """(index, text) of each user message with text in an OpenAI-style list, newest first; only
    `name`'s own when `name` is given and the list names its speakers (a group's history)."""
    items = messages or ()
    named = name is not None and any(
        isinstance(m, dict) and m.get("role") == "user" and m.get("name") for m in items
    )
    for index in range(len(items) - 1, -1, -1):
        message = items[index]
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        if named and message.get("name") != name:
            continue
        text = message_text(message.get("content"))
        if readable(text):
            yield index, text


def earlier_user_texts(
    history: Sequence[dict[str, Any]] | None, limit: int, name: str | None = None
) -> list[str]:
    """The last `limit` user messages with text in an OpenAI-style history (`name`'s own, when
    the history names its speakers), oldest first."""
    found = itertools.islice(user_texts_backwards(history, name), limit)
    texts = [text.strip() for _, text in found]
    return texts[::-1]


def author_of(quoted: str, messages: Sequence[dict[str, Any]] | None, chars: int) -> str | None:
    """The `name` of the newest user message in `messages` whose words (a reply's, without
    what it quoted) are `quoted`, compared on their first `chars` characters; None when no
    message is, or it names nobody."""
    index = user_message_of(quoted, messages, chars)
    name = (messages or ())[index].get("name") if index is not None else None
    return str(name) if name else None


def user_message_of(
    quoted: str, messages: Sequence[dict[str, Any]] | None, chars: int
) -> int | None:
    """The index of the newest user message in `messages` whose words are `quoted` (compared
    as author_of does); None when there is none."""
    key = normalize_text(quoted[:chars])
    for index, text in user_texts_backwards(messages):
        if normalize_text(split_quote(text)[0][:chars]) == key:
            return index
    return None


def answer_to(
    asked: str, messages: Sequence[dict[str, Any]] | None, chars: int, name: str | None = None
) -> str | None:
    """The bot's answer to the newest user message in `messages` (`name`'s own, when the list
    names its speakers) whose words as the router read them (`remembered_words`) are `asked`,
    compared on their first `chars` characters; None when there is none or it got no answer."""
    key = normalize_text(asked[:chars])
    for index, text in user_texts_backwards(messages, name):
        if normalize_text(remembered_words(text)[:chars]) == key:
            return answer_after(messages, index)
    return None


def answer_after(messages: Sequence[dict[str, Any]] | None, index: int) -> str | None:
    """The text of the assistant message right after `messages[index]`, if there is one."""
    items = messages or ()
    answer = items[index + 1] if index + 1 < len(items) else None
    if not isinstance(answer, dict) or answer.get("role") != "assistant":
        return None
    return message_text(answer.get("content")).strip() or None


def last_user_text(messages: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The last user message with text, and the messages before it; ("", []) when none has."""
    for index, text in user_texts_backwards(messages):
        return text, list(messages[:index])
    return "", []


def split_quote(text: str) -> tuple[str, str | None]:
    """A reply's words and the message it quotes, when `text` carries both as chat clients send
    them: the words, then "> " lines (after the bot's "(replying to NAME:)" line or not), or the
    "> " lines first. (text, None) when there are no words or no quote."""
    lines = text.strip().split("\n")
    quoted = [line.startswith(">") for line in lines]
    tail = len(lines)
    while tail > 0 and quoted[tail - 1]:
        tail -= 1
    if tail < len(lines):
        head, quote = lines[:tail], lines[tail:]
        if head and _REPLYING_TO.match(head[-1].strip()):
            head = head[:-1]
    else:
        lead = 0
        while lead < len(lines) and quoted[lead]:
            lead += 1
        head, quote = lines[lead:], lines[:lead]
    words = "\n".join(head).strip()
    quote_text = "\n".join(line[1:].removeprefix(" ") for line in quote).strip()
    if not readable(words) or not readable(quote_text):
        return text, None
    return words, quote_text


def wide_count(text: str) -> int:
    """How many characters of `text` are CJK or beyond (U+2E80 on): each carries about what a
    word of Latin letters does."""
    return sum(ord(ch) >= 0x2E80 for ch in text)


def _letters(text: str) -> str:
    """Letters and digits only: what survives Markdown becoming formatting."""
    return _NOT_LETTERS.sub("", unicodedata.normalize("NFKC", html.unescape(text))).casefold()


def answered_request(
    messages: Sequence[dict[str, Any]] | None, quoted: str
) -> dict[str, Any] | None:
    """The user message whose answer (the assistant message right after it) holds `quoted`: a
    reply to the bot's answer is about that request. The answer holding the most of the quote
    wins, the newest on a tie; None when no answer holds any of it."""
    letters = _letters(quoted)
    if len(letters) + wide_count(letters) < _ANSWER_KEY_LEAST:
        return None
    middle = max(0, (len(letters) - _ANSWER_KEY_CHARS) // 2)
    keys = {
        letters[:_ANSWER_KEY_CHARS],
        letters[middle : middle + _ANSWER_KEY_CHARS],
        letters[-_ANSWER_KEY_CHARS:],
    }
    items = messages or ()
    best: tuple[int, dict[str, Any]] | None = None
    for index in range(len(items) - 1, 0, -1):
        answer, question = items[index], items[index - 1]
        if not isinstance(answer, dict) or not isinstance(question, dict):
            continue
        if answer.get("role") != "assistant" or question.get("role") != "user":
            continue
        shown = _letters(_UNSHOWN_MARKDOWN.sub("", message_text(answer.get("content"))))
        held = sum(key in shown for key in keys) + (letters == shown)
        if held and (best is None or held > best[0]):
            best = (held, question)
    return best[1] if best is not None else None


def remembered_words(text: str) -> str:
    """A user message's words as the router read them, without what the bot's memory added."""
    for mark in _MEMORY_MARKS:
        text = mark.sub("", text)
    photo = _MEMORY_PHOTO.match(text.strip())
    if photo is not None:
        text = photo.group(1) or ""
    return split_quote(text)[0].strip()
