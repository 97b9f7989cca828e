"""A conversation's routing context: the speaker's previous turn and its task, kept in memory for
the most recent conversations and read back from the routing log for the rest; /reset starts it
over. In a group, each person's context is their own: grandma's "早安" does not set the tier of
her grandson's SQL question. With other processes on one PostgreSQL, turns and resets are
published to them and theirs heard (router/cluster/), and a turn not in memory is not read back
from the log: routing never waits on the database."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from router.config import RouterConfig
from router.counters import Counters
from router.signals.continuity import PreviousTurn
from router.signals.local_signal import LocalSignal
from router.store import routing_log
from router.store.database import Database, DatabaseError
from router.text import author_of, earlier_user_texts, normalize_text

log = logging.getLogger(__name__)

PRIOR_CACHE_SIZE = 10_000  # conversations whose last turn is kept in memory (older: from the log)
PRIOR_TEXT_CHARS = 300
# A reply can quote any recent message, not only its sender's last: this many turns a
# conversation are kept for replies, in this many recent conversations.
REPLY_TURNS = 32
REPLY_CONVERSATIONS = 1_000


ContextKey = tuple[str, str | None]  # (conv_key, user_key)


class ContextPublisher(Protocol):
    """Tells the other processes on the database of this process's turns and resets."""

    def turn(self, conv_key: str, user_key: str | None, turn: PreviousTurn) -> None: ...
    def reset(self, conv_key: str, at: float) -> None: ...
    def drop(self, conv_key: str | None, user_key: str | None) -> None: ...


class ConversationContext:
    """The last turn of each speaker in each conversation, and the recent turns a reply may
    quote."""

    def __init__(
        self,
        config: RouterConfig,
        conn: Database,
        local: LocalSignal | None,
        counters: Counters,
    ) -> None:
        self.config = config
        self.conn = conn
        self.local = local
        self.counters = counters
        self._previous: OrderedDict[ContextKey, PreviousTurn] = OrderedDict()
        # Per conversation, its recent turns (sender, turn), oldest first: what a reply quotes.
        self._recent: OrderedDict[str, deque[tuple[str | None, PreviousTurn]]] = OrderedDict()
        self._resets: OrderedDict[str, float] = OrderedDict()  # heard from other processes
        self.publisher: ContextPublisher | None = None
        # False when other processes publish their turns (PostgreSQL): memory is the context.
        self.read_log_on_miss = True

    async def previous(
        self,
        history: Sequence[dict[str, Any]] | None,
        conv_key: str | None,
        now: float,
        user_key: str | None = None,
        name: str | None = None,
    ) -> PreviousTurn | None:
        """The speaker's previous turn and its task: the log's when it is the history's last
        user turn of theirs (it knows the time, and the LLM's label in shadow mode), else read
        from the history itself, else the log's alone. `name` is how the speaker shows in the
        history's `name` fields."""
        logged = await self.previous_turn(conv_key, user_key)
        if not self.config.context.enabled:
            return None
        texts = earlier_user_texts(history, self.config.context.max_history_turns, name)
        if not texts:
            return logged
        if logged is not None and normalize_text(logged.text) == normalize_text(
            texts[-1][:PRIOR_TEXT_CHARS]
        ):
            return logged
        if self.local is None or not self.local.ready:
            return logged
        try:
            return await self.local.previous_from_history(texts, now)
        except Exception:
            log.exception("could not read the history's context")
            self.counters["local_errors"] += 1
            return logged

    async def replied(
        self,
        quoted: str,
        conv_key: str | None,
        now: float,
        user_key: str | None = None,
        history: Sequence[dict[str, Any]] | None = None,
        name: str | None = None,
        author: str | None = None,
        answered: bool = False,
    ) -> PreviousTurn | None:
        """The message a turn replies to as its context, when the router knows it: a turn kept
        of the conversation with that text (its task and time as routed), else a message whose
        vector is cached, read alone. None otherwise: reading it would cost a second embedding.
        Whether someone else sent it: its `author` (as the caller names people) against the
        speaker's `name`, else the kept turn's speaker against `user_key`, else the `name` on it
        in `history` against `name`. `answered`: the quote is the request the bot's answer
        answered, and whoever asked it, a reply to that answer talks to the bot about it, not to
        another person (whose task such a reply rarely goes on with)."""
        if not self.config.context.enabled or not quoted.strip():
            return None
        key = normalize_text(quoted[:PRIOR_TEXT_CHARS])
        known = answered or (author is not None and name is not None)
        if not known:
            author = author_of(quoted, history, PRIOR_TEXT_CHARS)
        another = not answered and None not in (author, name) and author != name
        for sender, turn in self._quotable(conv_key):
            if normalize_text(turn.text) == key:
                if not known and None not in (sender, user_key):
                    another = sender != user_key
                # The speaker's own reaction keeps the task behind it: "wait, why?" in reply to
                # the bot's "you're welcome" after their "lol thanks" may go back to it.
                behind = turn.task_behind if sender == user_key else None
                # The kept turn as routed (its task, time, confidence), under the quote's words.
                return dataclasses.replace(
                    turn, text=quoted, vector=None, another_speaker=another, task_behind=behind
                )
        if self.local is None or not self.local.ready or self.local.embedder.cached(quoted) is None:
            return None
        try:
            result = await self.local.answer(quoted, None, now)
        except Exception:
            log.exception("could not read the message replied to")
            self.counters["local_errors"] += 1
            return None
        if result.answer is None:
            return None
        answer = result.answer
        return PreviousTurn(
            answer.category, None, quoted, another_speaker=another, confidence=answer.confidence
        )

    async def previous_turn(
        self, conv_key: str | None, user_key: str | None = None
    ) -> PreviousTurn | None:
        if conv_key is None:
            return None
        key = (conv_key, user_key)
        if key in self._previous:
            self._previous.move_to_end(key)
        elif not self.read_log_on_miss:
            return None
        else:
            try:
                turn = await routing_log.last_turn(self.conn, conv_key, user_key)
            except DatabaseError:
                log.exception("could not read the conversation's last decision")
                self.counters["db_errors"] += 1
                return None
            if turn is None:
                return None
            self.remember(conv_key, turn, user_key)
        return self._previous[key]

    def remember(self, conv_key: str, turn: PreviousTurn, user_key: str | None = None) -> None:
        """Keep the last turn of the most recent speakers; the rest are read back on demand."""
        behind = turn.task_behind
        kept = dataclasses.replace(
            self._cut(turn), task_behind=None if behind is None else self._cut(behind)
        )
        key = (conv_key, user_key)
        self._previous[key] = kept
        self._previous.move_to_end(key)
        while len(self._previous) > PRIOR_CACHE_SIZE:
            self._previous.popitem(last=False)
        recent = self._recent.setdefault(conv_key, deque(maxlen=REPLY_TURNS))
        recent.append((user_key, kept))
        self._recent.move_to_end(conv_key)
        while len(self._recent) > REPLY_CONVERSATIONS:
            self._recent.popitem(last=False)

    def _quotable(self, conv_key: str | None) -> Iterator[tuple[str | None, PreviousTurn]]:
        """The conversation's turns a reply may quote, newest first: the recent ones, then each
        speaker's last (kept for more conversations), read only as far as the reply's quote."""
        yield from reversed(self._recent.get(conv_key or "", ()))
        for key, turn in reversed(self._previous.items()):
            if key[0] == conv_key:
                yield key[1], turn

    def _let_go(self, keep: Callable[[str, str | None, PreviousTurn], bool]) -> None:
        """Drop every kept turn, last or recent, for which `keep(conv, sender, turn)` is False."""
        self._revise(lambda conv, sender, turn: turn if keep(conv, sender, turn) else None)

    def _revise(
        self, change: Callable[[str, str | None, PreviousTurn], PreviousTurn | None]
    ) -> None:
        """Replace every kept turn, last or recent, by `change(conv, sender, turn)`; None lets
        go of it."""
        for key, turn in list(self._previous.items()):
            changed = change(key[0], key[1], turn)
            if changed is None:
                del self._previous[key]
            elif changed is not turn:
                self._previous[key] = changed
        for conv, recent in list(self._recent.items()):
            revised = [(sender, change(conv, sender, turn)) for sender, turn in recent]
            if any(new is not old for (_, new), (_, old) in zip(revised, recent, strict=True)):
                kept = [(sender, turn) for sender, turn in revised if turn is not None]
                self._recent[conv] = deque(kept, maxlen=REPLY_TURNS)

    def _cut(self, turn: PreviousTurn) -> PreviousTurn:
        """The turn with its first PRIOR_TEXT_CHARS characters; when that cut its words, with
        the vector of the words it had, or the next turn would embed the cut words (a second
        embedding for that message)."""
        if len(turn.text) <= PRIOR_TEXT_CHARS:
            return turn
        vector = turn.vector
        if vector is None and self.local is not None:
            vector = self.local.embedder.cached(turn.text)
        own = turn.own_words
        return dataclasses.replace(
            turn,
            text=turn.text[:PRIOR_TEXT_CHARS],
            vector=vector,
            own_words=None if own is None else own[:PRIOR_TEXT_CHARS],
        )

    def held(self, conv_key: str, user_key: str | None = None) -> PreviousTurn | None:
        """The turn kept in memory for this speaker in this conversation, if any."""
        return self._previous.get((conv_key, user_key))

    def record(self, conv_key: str, turn: PreviousTurn, user_key: str | None = None) -> None:
        """A turn this process routed: kept, and published to the other processes; not one
        asked before a /reset that came while it was routed (the conversation starts over)."""
        reset_at = self._resets.get(conv_key)
        if reset_at is not None and (turn.at or 0.0) <= reset_at:
            return
        self.remember(conv_key, turn, user_key)
        if self.publisher is not None:
            self.publisher.turn(conv_key, user_key, turn)

    def heard(self, conv_key: str, turn: PreviousTurn, user_key: str | None = None) -> bool:
        """A turn another process routed: kept unless a newer one or a later reset is known."""
        held = self._previous.get((conv_key, user_key))
        if held is not None and (held.at or 0.0) >= (turn.at or 0.0):
            return False
        reset_at = self._resets.get(conv_key, 0.0)
        if (turn.at or 0.0) <= reset_at:
            return False
        if turn.task_behind is not None and (turn.task_behind.at or 0.0) <= reset_at:
            turn = dataclasses.replace(turn, task_behind=None)  # a /reset came between them
        self.remember(conv_key, turn, user_key)
        return True

    def heard_reset(self, conv_key: str, at: float) -> None:
        """Another process reset the conversation at `at`: its turns up to then are gone."""
        self._note_reset(conv_key, at)
        self._let_go(lambda conv, _, turn: conv != conv_key or (turn.at or 0.0) > at)

    def _note_reset(self, conv_key: str, at: float) -> None:
        """A turn from before it, heard late, is not kept."""
        self._resets[conv_key] = max(at, self._resets.get(conv_key, 0.0))
        self._resets.move_to_end(conv_key)
        while len(self._resets) > PRIOR_CACHE_SIZE:
            self._resets.popitem(last=False)

    def drop(
        self,
        conv_key: str | None,
        user_key: str | None,
        publish: bool = True,
        before: float | None = None,
    ) -> None:
        """Let go of the turns kept of a conversation, a person, or a person in a conversation
        (in every process on the database, unless it is another's erasure being heard);
        `before`: only those from then or earlier (an erasure heard late: turns since stay)."""

        def change(conv: str, sender: str | None, turn: PreviousTurn) -> PreviousTurn | None:
            if conv_key not in (None, conv) or user_key not in (None, sender):
                return turn
            if _up_to(turn, before):
                return None
            # A later turn of theirs reacting to an erased one keeps no copy of it.
            behind = turn.task_behind
            return dataclasses.replace(turn, task_behind=None) if _up_to(behind, before) else turn

        self._revise(change)
        if user_key is not None:
            self._unquote(conv_key, before)
        if publish and self.publisher is not None:
            self.publisher.drop(conv_key, user_key)

    def _unquote(self, conv_key: str | None, before: float | None = None) -> None:
        """Cut every kept turn read with a quote under its words, in the conversation (None:
        everywhere) and from `before` or earlier (None: whenever), back to its sender's own
        words."""

        # The router does not know whose words a quote held (a message it never routed; its
        # author, when given, is a display name, not a person's key), so a person's erasure
        # cuts back every quote in its scope, whoever wrote it.
        def cut(conv: str, _: str | None, turn: PreviousTurn) -> PreviousTurn | None:
            if conv_key not in (None, conv):
                return turn
            if _up_to(turn, before):
                return _unquoted(turn)
            behind = turn.task_behind  # a later turn reacting to one read with a quote
            if behind is None or not _up_to(behind, before):
                return turn
            unquoted = _unquoted(behind)
            return turn if unquoted is behind else dataclasses.replace(turn, task_behind=unquoted)

        self._revise(cut)

    async def forget(self, conv_key: str, at: float | None = None) -> bool:
        """/reset: the conversation's routing context starts over. True when there was one."""
        at = time.time() if at is None else at  # a turn that comes while this reads is after it
        had = await self.previous_turn(conv_key) is not None or any(
            key[0] == conv_key for key in self._previous
        )
        self._let_go(lambda conv, _, turn: conv != conv_key or (turn.at or 0.0) > at)
        self._note_reset(conv_key, at)
        if self.publisher is not None:
            self.publisher.reset(conv_key, at)
        try:
            await routing_log.reset_context(self.conn, conv_key, at)
        except DatabaseError:
            log.exception("could not store the conversation's reset")
            self.counters["db_errors"] += 1
        return had


def _up_to(turn: PreviousTurn | None, before: float | None) -> bool:
    """Whether `turn` is one from `before` or earlier (None: any time); no turn is not."""
    return turn is not None and (before is None or (turn.at or 0.0) <= before)


def _unquoted(turn: PreviousTurn) -> PreviousTurn | None:
    """The turn (and the task behind it) without a quote under its sender's words: their own
    words alone, without the vector of the words with the quote (the next turn embeds them).
    None when no words are left (heard from a process that keeps no prompts): with neither
    text nor vector it is no context, as a logged turn without text is not."""
    behind = turn.task_behind
    if behind is not None:
        behind = _unquoted(behind)
    if turn.own_words is None:
        return turn if behind is turn.task_behind else dataclasses.replace(turn, task_behind=behind)
    if not turn.own_words:
        return None
    return dataclasses.replace(
        turn, text=turn.own_words, own_words=None, vector=None, task_behind=behind
    )
