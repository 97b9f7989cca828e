"""The steps every proxy endpoint shares: admit a request (loops, keys, body size), check its
model, route it, end its log row (completed, failed, client gone) and relay a provider's stream."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request

from router.decision import Outcome, RoutingDecision, Source
from router.proxy.access import AUTO, Access, Caller
from router.proxy.errors import ProxyError, model_not_allowed
from router.proxy.metrics import ProxyMetrics
from router.proxy.provider import HOP_HEADER, Provider, ProviderStream, Usage, failure
from router.proxy.request import ChatRequest, read_body
from router.router import ModelRouter
from router.taxonomy import TIERS
from router.text import last_user_text, readable, split_quote

log = logging.getLogger(__name__)
# The status of an answer nobody reads, as nginx logs it: the client closed the request.
CLIENT_GONE = 499


async def hung_up(request: Request) -> None:
    """Returns when the client closes its connection (its request body read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        continue


@dataclass(frozen=True)
class Target:
    """Where one request goes, and the headers that tell the client why."""

    model: str
    decision: RoutingDecision
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    started: float = field(default_factory=time.perf_counter)  # the provider call's start


def header_safe(value: str) -> str:
    """`value` as it can go in a header: printable ASCII as it is, anything else
    percent-encoded (a header carrying CR/LF or a character outside Latin-1 breaks the
    answer)."""
    if value.isascii() and value.isprintable():
        return value
    return urllib.parse.quote(value, safe=" !#$&'()*+,/:;=?@[]~")


def decision_headers(decision: RoutingDecision) -> dict[str, str]:
    """The X-Crabbot-* headers that say how a request was routed."""
    headers = {
        "X-Crabbot-Source": decision.source,
        "X-Crabbot-Model": decision.model,
        "X-Crabbot-Decision-Id": decision.id,
    }
    if decision.tier:
        headers["X-Crabbot-Tier"] = decision.tier
    if decision.category is not None:
        headers["X-Crabbot-Category"] = decision.category
    if decision.source not in ("alias", "passthrough"):
        headers["X-Crabbot-Routing-Ms"] = f"{decision.latency_ms:.2f}"
    return {name: header_safe(value) for name, value in headers.items()}


class Gateway:
    """The steps every endpoint shares (admission, routing, the log row's end, the relay), over
    one router and one provider client."""

    def __init__(
        self, router: ModelRouter, provider: Provider, env_keys: Sequence[str] = ()
    ) -> None:
        self.router = router
        self.provider = provider
        self.settings = router.config.proxy
        self.access = Access(
            self.settings, router.config.models, [*self.settings.client_keys, *env_keys]
        )
        self.metrics = ProxyMetrics(router.counters, router.log.writer)
        # Streams still being relayed: their rows are queued when they end (see `settled`).
        self._relays: set[asyncio.Future[None]] = set()
        self.stopping = False  # the server is stopping: a stream cut now was interrupted

    def stop_begun(self) -> None:
        """The server stops: streams it cuts from now on end as `interrupted`, not as
        `client_gone`."""
        self.stopping = True

    # -- checks --------------------------------------------------------------------------------

    def authorize(self, request: Request) -> str | None:
        """The caller's key label; a 401 without a valid key (when keys are set)."""
        return self.access.authorize(request)

    async def admitted(self, request: Request) -> tuple[Caller, bytes]:
        """Every POST endpoint's first steps: not our own forwarded request, a valid key (who
        the caller is), and the body within proxy.max_body_bytes."""
        self.refuse_loops(request)
        caller = self.access.identify(request)
        return caller, await read_body(request, self.settings.max_body_bytes)

    def check_model(self, label: str | None, model: str) -> None:
        """A 403 for a model this key may not use, before any routing or provider call."""
        if not self.access.allows(label, model):
            self.router.counters["models_refused"] += 1
            log.info("refused model %.200r for key label %s", model, label or "(none)")
            raise model_not_allowed(model)

    @staticmethod
    def refuse_loops(request: Request) -> None:
        if HOP_HEADER.lower() in request.headers:
            raise ProxyError(
                508,
                "the proxy received its own forwarded request: point proxy.base_url (or"
                " OPENAI_BASE_URL) at the provider, not at this proxy",
                type_="upstream_error",
                code="proxy_loop",
            )

    # -- routing -------------------------------------------------------------------------------

    async def target(self, chat: ChatRequest, caller: Caller) -> Target:
        """The model for a checked request; its session key is read in the caller's namespace."""
        models = self.router.config.models
        conv_key = caller.conv_key(chat.session_key)
        if chat.model == AUTO:
            text, history = chat.route_text, chat.history
            # An image alone, no user message, or nothing readable (a zero-width space): the last
            # user text there is.
            if not readable(text):
                text, history = last_user_text(history)
            if readable(text):
                words, quoted = split_quote(text)  # a reply: routed on its words, quote as context
                # A client key teaches the pool as one source, whatever its session keys.
                decision = await self.router.route(
                    words,
                    history,
                    conv_key=conv_key,
                    user_key=caller.user_key(chat.person),
                    name=chat.speaker,
                    origin=f"proxy:{caller.namespace}",
                    replied_to=quoted,
                )
            else:
                decision = await self.router.route_without_text(
                    "no user text to route: the default tier", conv_key=conv_key
                )
        else:
            # The speaker is kept beside the prompt as with auto: their erasure reaches it.
            user_key = caller.user_key(chat.person)
            source: Source
            tier: str | None
            if chat.model in TIERS:
                model, tier, source = models.for_tier(chat.model), chat.model, "alias"
            else:
                model, source = chat.model, "passthrough"
                tier = next((tier for tier in TIERS if models.for_tier(tier) == model), None)
            decision = self.router.named(model, tier, source, chat.route_text, conv_key, user_key)
        self.metrics.decided(decision)
        return Target(decision.model, decision, decision_headers(decision), stream=chat.stream)

    def failed(self, target: Target, error: ProxyError) -> None:
        said = error.logged()
        log.warning("provider call for model %s failed: %s", target.model, said)
        if error.provider_words:
            log.debug("the provider said: %s", error.message)
        self.router.counters["upstream_errors"] += 1
        self.metrics.provider_done(target.started, target.stream, error.status)
        self.router.finish(target.decision, "provider_error", error=f"provider: {said}")

    async def whole_answer(
        self, request: Request, target: Target, path: str, body: dict[str, Any]
    ) -> tuple[bytes, dict[str, Any]] | None:
        """The provider's JSON answer to `body` posted to `path`, raw and parsed; None when the
        client hung up first. Its call is then given up (a provider stops generating when the
        connection closes) and the row ends as client_gone, not completed."""
        call = asyncio.ensure_future(self.provider.post_json(path, body))
        gone = asyncio.ensure_future(hung_up(request))
        try:
            await asyncio.wait((call, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not call.done():
                call.cancel()
        if not call.done():  # the client went first: the call given up, its connection closed
            await asyncio.wait((call,))
        if not call.cancelled():
            return call.result()
        log.info("a client hung up before its answer from %s came", target.model)
        self.ended(target, "client_gone", None)
        return None

    def ended(self, target: Target, outcome: Outcome, usage: Usage | None) -> None:
        if outcome == "completed":
            self.metrics.provider_done(target.started, target.stream, None)
        self.router.finish(
            target.decision,
            outcome,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    async def relay(
        self,
        stream: ProviderStream,
        target: Target,
        error_event: Callable[[ProxyError], bytes],
    ) -> AsyncIterator[bytes]:
        """The provider's events as they come; a broken stream's error as the last event
        (`error_event` says it in the endpoint's words); the row ended when the relay ends."""
        relayed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._relays.add(relayed)
        relayed.add_done_callback(self._relays.discard)
        ended = False
        try:
            async for event in stream.events():
                yield event
            ended = True
        except Exception as exc:  # the status line is gone: the error becomes the last event
            error = failure(exc)
            self.failed(target, error)
            yield error_event(error)
        finally:
            # Runs when the client hangs up too; the shield lets the cleanup finish then.
            with anyio.CancelScope(shield=True):
                try:
                    await stream.close()
                finally:
                    # A no-op when the provider's failure was already logged.
                    cut: Outcome = "interrupted" if self.stopping else "client_gone"
                    self.ended(target, "completed" if ended else cut, stream.usage)
                    relayed.set_result(None)

    async def settled(self) -> None:
        """Wait until every request answered so far is in the log: a streamed answer's row is
        queued when its relay ends, a moment after the client has read the last event."""
        while self._relays:
            await asyncio.wait(set(self._relays))
        await self.router.log.flush()
