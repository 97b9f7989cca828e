"""How the upstream model is told who speaks: the author before the words for a provider, or,
for a routing proxy (model "auto"), each message's `name` and one system line, so the text the
proxy routes on is the words alone, as the bot's own router reads them; and who they are, by key."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any, cast

from openai.types.chat import ChatCompletionMessageParam

from bot.chat_user import ChatUser
from bot.incoming import Incoming
from bot.memory import Turn

# What OpenAI takes in a message's `name`.
NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
NAME_CUT = 40  # room for "_" and the hash


def speaker_name(author: str) -> str:
    """`author` as a message's `name`: itself when it fits, else its ASCII letters and digits
    and 8 hex digits of its hash ("奶奶" -> "user_1b2c3d4e"), the same for every turn."""
    if NAME.fullmatch(author):
        return author
    kept = re.sub(r"[^a-zA-Z0-9_-]+", "_", author).strip("_")[:NAME_CUT] or "user"
    return f"{kept}_{hashlib.sha256(author.encode()).hexdigest()[:8]}"


def header_safe(key: str) -> str:
    """A key as a routing proxy's header carries it (X-Session-Key, X-Crabbot-Speaker), and as
    its admin endpoints then name it: what a header cannot carry (a console name outside ASCII)
    percent-encoded."""
    if key.isascii() and key.isprintable():
        return key
    return urllib.parse.quote(key, safe=":")


def speaker_key(user: ChatUser) -> str:
    """Who speaks, for a routing proxy to keep their words under (X-Crabbot-Speaker): their
    `platform:id`, which no new display name changes."""
    return header_safe(user.key)


def speaker_line(authors: Sequence[str], last: str) -> str:
    """The system prompt's line about who is who, for a model that reads `name` or not."""
    renamed = sorted({f"{speaker_name(a)} is {a}" for a in authors if speaker_name(a) != a})
    who = f" ({'; '.join(renamed)})" if renamed else ""
    return f"Each user message's name says who wrote it{who}. The last message is from {last}."


def _prefixed(turn: Turn) -> ChatCompletionMessageParam:
    if turn.role == "assistant":
        return {"role": "assistant", "content": turn.content}
    # In a group several people talk to the bot; the model needs to know who said what.
    content = f"{turn.author}: {turn.content}" if turn.author else turn.content
    return {"role": "user", "content": content}


def _named(turn: Turn) -> ChatCompletionMessageParam:
    if turn.role == "assistant":
        return {"role": "assistant", "content": turn.content}
    if turn.author:
        return {"role": "user", "content": turn.content, "name": speaker_name(turn.author)}
    return {"role": "user", "content": turn.content}


def model_messages(
    system_prompt: str,
    history: Sequence[Turn],
    incoming: Incoming,
    author: str | None,
    named: bool,
) -> list[ChatCompletionMessageParam]:
    """The request's messages. `named` (a routing proxy): the speaker in `name` and in one
    system line, never in the text; otherwise before the text, as "Mom: ..."."""
    if not named:
        current: dict[str, Any] = {"role": "user", "content": incoming.model_content(author)}
        return [
            {"role": "system", "content": system_prompt},
            *(_prefixed(turn) for turn in history),
            cast(ChatCompletionMessageParam, current),
        ]
    current = {"role": "user", "content": incoming.model_content(None)}
    system = system_prompt
    if author:
        current["name"] = speaker_name(author)
        authors = [turn.author for turn in history if turn.author] + [author]
        system = f"{system_prompt}\n\n{speaker_line(authors, author)}"
    return [
        {"role": "system", "content": system},
        *(_named(turn) for turn in history),
        cast(ChatCompletionMessageParam, current),
    ]
