"""The agent: one message in, one reply out. History from memory, a routing decision, an
upstream completion with the routed model, both turns stored; the decision is logged with its
outcome and usage once the answer is in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from openai.types.chat import ChatCompletionMessageParam

from bot.chat_user import ChatUser, user_key_of
from bot.history_wait import HistoryWait
from bot.incoming import Incoming
from bot.language import apology
from bot.media import Unreadable
from bot.memory import Memory, Turn
from bot.proxy_admin import ProxyAdminError
from bot.speakers import model_messages
from bot.upstream import AUTO_MODEL, Routed, Upstream, UpstreamError
from router import EmptyMessageError, ModelRouter, RoutingDecision

log = logging.getLogger(__name__)

LATE_READS_AT_CLOSE_S = 1.0  # a history read still running at shutdown gets this to end

Deliver = Callable[["Reply"], Awaitable[None]]
OnText = Callable[[str], None]  # the answer so far, while it streams
# Reads a message that needs work first (a download, a transcription), in the message's turn.
Prepare = Callable[[], Awaitable[Incoming]]


@dataclass(frozen=True)
class Reply:
    """What the agent answers. `text` is None when no upstream is configured (routing only);
    `decision` is None when the bot does not route: the upstream routes by itself (model
    "auto"; `routed` says how, when it is crabbot proxy), or config fixes one model for every
    reply."""

    text: str | None
    decision: RoutingDecision | None
    model: str | None
    error: str | None = None
    routed: Routed | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Agent:
    """Answers messages of one conversation in order, of different conversations at once."""

    def __init__(
        self,
        router: ModelRouter,
        memory: Memory,
        upstream: Upstream,
        system_prompt: str,
        counters: Counter[str],
    ) -> None:
        self.router = router
        self.counters = counters  # the bot's own failures, by name
        self.memory = memory
        self.upstream = upstream
        self.system_prompt = system_prompt
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: Counter[str] = Counter()
        self._late_reads: set[asyncio.Task[list[Turn]]] = set()  # timed out, still ending
        self.history_wait = HistoryWait()
        # One late read left running: when it succeeds the database answers again (a read
        # that comes back in a second after an outage is not cut at the short wait).
        self._probe: asyncio.Task[list[Turn]] | None = None

    async def handle(
        self,
        conv_key: str,
        user: ChatUser | None,
        message: str | Incoming | Prepare,
        deliver: Deliver | None = None,
        on_text: OnText | None = None,
        came_at: float | None = None,
    ) -> Reply:
        """Answer `message` (its words, the message it replies to, its images; or what reads
        them), and hand the reply to `deliver` (if given) before the conversation's next
        message is answered; a streamed answer goes to `on_text` as it grows. `came_at`: when
        the message came, when that was before this call (an album gathered first). Call it before
        any other await in a handler: the lock is taken at once and asyncio locks are fair, so
        replies keep the messages' order."""
        if isinstance(message, str):
            message = Incoming(message)
        if isinstance(message, Incoming) and message.is_empty():
            raise EmptyMessageError("the message is empty")
        # When it came (now, unless the caller knows better), not when its turn began or its
        # photos were read: what the person erased after sending it (/forget while it waited or
        # was read) reaches it as it does an answer still being written, and the gap to their
        # previous turn is the one they left.
        asked_at = time.time() if came_at is None else came_at
        lock = self._locks.setdefault(conv_key, asyncio.Lock())
        self._holders[conv_key] += 1
        try:
            async with lock:
                reply = await self._read_and_answer(conv_key, user, message, on_text, asked_at)
                if deliver is not None:
                    await deliver(reply)
                return reply
        finally:
            self._holders[conv_key] -= 1
            if not self._holders[conv_key]:
                del self._holders[conv_key]
                del self._locks[conv_key]

    async def _read_and_answer(
        self,
        conv_key: str,
        user: ChatUser | None,
        message: Incoming | Prepare,
        on_text: OnText | None,
        asked_at: float,
    ) -> Reply:
        if isinstance(message, Incoming):
            return await self._answer(conv_key, user, message, on_text, asked_at)
        try:
            incoming = await message()
        except Unreadable as exc:  # too big, a wrong type, no transcription: say so, go on
            log.info("could not use a message in %s: %s", conv_key, exc.reason)
            self.counters[exc.reason] += 1
            return Reply(exc.reply, None, None, error=exc.reason)
        except Exception as exc:  # a bug in reading must cost this message, not the chat
            log.exception("could not read a message in %s", conv_key)
            self.counters["unreadable_errors"] += 1
            return Reply(apology(""), None, None, error=type(exc).__name__)
        if incoming.is_empty():
            raise EmptyMessageError("the message is empty")
        return await self._answer(conv_key, user, incoming, on_text, asked_at)

    async def _history(self, conv_key: str) -> list[Turn]:
        """The conversation's history; none when the database fails or takes longer than
        `history_wait` allows: that costs the conversation its memory, never the reply."""
        wait_s = self.history_wait.seconds()
        read = asyncio.create_task(self.memory.history(conv_key))
        done, _ = await asyncio.wait({read}, timeout=wait_s)
        if not done:
            if self._probe is None:
                self._probe = read
            else:  # not awaited: the query's cancellation may itself wait on the database
                read.cancel()
            self._late_reads.add(read)
            read.add_done_callback(self._late_read_ended)
            log.warning(
                "the history of %s took over %g s to read; answering without it", conv_key, wait_s
            )
            self.counters["db_timeouts"] += 1
            self._history_failed()
            return []
        try:
            history = read.result()
        except Exception:
            self._db_failed("read the conversation's history; answering without it")
            self._history_failed()
            return []
        self._history_answered()
        return history

    async def settle(self, timeout_s: float | None = None) -> None:
        """Wait (at most `timeout_s`) for the history reads left running past their wait."""
        if self._late_reads:
            await asyncio.wait(set(self._late_reads), timeout=timeout_s)

    async def close(self, timeout_s: float = LATE_READS_AT_CLOSE_S) -> None:
        """Before the database closes: the late reads get `timeout_s` to end, the rest are
        cancelled (a read left on a closing pool fails with a misleading error)."""
        await self.settle(timeout_s)
        for read in list(self._late_reads):
            read.cancel()

    def _history_failed(self) -> None:
        if self.history_wait.failed():
            log.warning(
                "until the database answers again, a reply waits at most %g s for its history",
                self.history_wait.short_s,
            )

    def _late_read_ended(self, read: asyncio.Task[list[Turn]]) -> None:
        self._late_reads.discard(read)
        if read is self._probe:
            self._probe = None
        if read.cancelled() or read.exception() is not None:
            return  # taken, not raised: its cost was counted as the timeout
        self._history_answered()

    def _history_answered(self) -> None:
        if self.history_wait.answered():
            log.info("the database answers again: replies wait for their history as before")

    async def _erasures_meanwhile(self) -> None:
        """Apply what another process erased while the answer ran (`crabbot forget` at a
        terminal) before the exchange is kept: on SQLite its notice is read now, not only on the
        next message's way (the routing-log row just queued is written, then erased)."""
        await self.router.erasures.check(max_age_s=0.0)
        await self.router.erasures.settled()

    async def _erase_at_proxy_too(
        self, conv_key: str, user: ChatUser | None, asked_at: float
    ) -> None:
        """The asker's /forget came while this message waited or was answered: a routing proxy
        kept it after that /forget reached it, so it is asked to let go of it too."""
        proxy, user_key = self.upstream.proxy, user_key_of(user)
        if proxy is None or user is None or user_key is None:
            return
        if not self.memory.person_erased_since(asked_at, conv_key, user_key):
            return  # a /reset, not their erasure
        try:
            await proxy.forget_person(conv_key, user)
        except ProxyAdminError as exc:
            self.counters["proxy_admin_errors"] += 1
            log.warning("could not erase at the proxy a message answered after /forget: %s", exc)
        except Exception:  # the answer is written: it still goes out
            self.counters["proxy_admin_errors"] += 1
            log.exception("could not erase at the proxy a message answered after /forget")

    def _db_failed(self, what: str) -> None:
        log.exception("could not %s", what)
        self.counters["db_errors"] += 1

    async def _route(
        self,
        incoming: Incoming,
        history: list[Turn],
        conv_key: str,
        user: ChatUser | None,
        asked_at: float,
    ) -> RoutingDecision:
        text = incoming.routing_text()
        if not text.strip():  # a photo with no caption: nothing to read, a tier for images
            tier = self.router.config.routing.image_tier
            return await self.router.route_without_text(
                f"image without text: routing.image_tier {tier}", conv_key, asked_at, tier=tier
            )
        # Each person's context is their own previous turn: the history names who said what.
        messages = [
            {"role": t.role, "content": t.content, **({"name": t.author} if t.author else {})}
            for t in history
        ]
        bare = incoming.bare_quote()  # routed as the request, logged as nobody's words
        return await self.router.route(
            "" if bare else text,
            messages,
            conv_key,
            at=asked_at,
            user_key=user_key_of(user),
            name=user.name if user else None,
            replied_to=bare or incoming.replied_to(),
            replied_author=incoming.quote.author if incoming.quote else None,
            replied_answer=incoming.quote.mine if incoming.quote else None,
        )

    async def _answer(
        self,
        conv_key: str,
        user: ChatUser | None,
        incoming: Incoming,
        on_text: OnText | None,
        asked_at: float,
    ) -> Reply:
        text = incoming.routing_text()
        # Read before the history too: a bot that never routes (model auto, or one fixed model)
        # reads another process's erasures nowhere else.
        await self.router.erasures.check()
        history = await self._history(conv_key)
        decision: RoutingDecision | None = None
        if self.upstream.auto:
            model = AUTO_MODEL
        elif self.upstream.fixed_model is not None:
            model = self.upstream.fixed_model  # config fixed the model: routing is off
        else:
            decision = await self._route(incoming, history, conv_key, user, asked_at)
            decision.transcription_ms = incoming.transcription_ms
            model = decision.model
        if not self.upstream.configured:
            if decision is not None:
                self.router.finish(decision, "routed")
            return Reply(None, decision, model)
        author = user.name if user else None
        # A routing proxy routes on the text: the speaker goes in `name`, not before the words
        # (and who they are, their key, in a header the proxy keeps their words under).
        messages: list[ChatCompletionMessageParam] = model_messages(
            self.system_prompt, history, incoming, author, named=self.upstream.auto
        )
        partial = ""

        def streamed(so_far: str) -> None:
            nonlocal partial
            partial = so_far
            if on_text is not None:
                on_text(incoming.headed(so_far))

        try:
            completion = await self.upstream.complete(
                model,
                messages,
                session_key=conv_key,
                speaker_key=user_key_of(user),
                on_text=streamed,
            )
        except UpstreamError as exc:
            failed = await self._failed(conv_key, text, decision, model, exc.reason, partial)
            return replace(failed, text=incoming.headed(failed.text or ""), routed=exc.routed)
        except Exception as exc:  # whatever breaks, the chat must get an answer and go on
            log.exception("upstream call failed unexpectedly")
            reason = type(exc).__name__
            failed = await self._failed(conv_key, text, decision, model, reason, partial)
            return replace(failed, text=incoming.headed(failed.text or ""))
        if decision is not None:
            self.router.finish(
                decision,
                "completed",
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens,
            )
        await self._erasures_meanwhile()
        try:
            kept = await self.memory.add_exchange(
                conv_key,
                author,
                incoming.memory_text(),
                completion.text,
                user_key_of(user),
                quote=incoming.memory_quote(),
                quoted_key=incoming.quote.user_key if incoming.quote else None,
                asked_at=asked_at,
            )
        except Exception:
            self._db_failed("store the exchange in memory")
        else:
            if not kept:
                log.info("the asker in %s was erased while the answer ran: not kept", conv_key)
                await self._erase_at_proxy_too(conv_key, user, asked_at)
        return Reply(incoming.headed(completion.text), decision, model, routed=completion.routed)

    async def _failed(
        self,
        conv_key: str,
        text: str,
        decision: RoutingDecision | None,
        model: str,
        reason: str,
        partial: str = "",
    ) -> Reply:
        self.counters["upstream_errors"] += 1
        log.warning("no reply for %s (model %s): %s", conv_key, model, reason)
        if decision is not None:
            self.router.finish(decision, "provider_error", error=reason)
        # The failed exchange is not stored: the next message starts from a clean history. What
        # a broken stream had already shown stays, with the apology under it.
        sorry = apology(text)
        answer = f"{partial.rstrip()}\n\n{sorry}" if partial.strip() else sorry
        return Reply(answer, decision, model, error=reason)
