"""The chat commands every adapter shares: /routing stats, /routing mode, /reset, /forget,
/whoami and /help, with the admin check. A command is parsed once; the answer is text or a
picture, which the adapter only delivers."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from bot.chat_user import ChatUser, user_key_of
from bot.config import AdminSettings
from bot.console_history import PrivateHistory, is_console
from bot.erasure import forget
from bot.memory import Memory
from bot.proxy_admin import ProxyAdmin, ProxyAdminError, ProxyStats
from router import MODES, ModelRouter
from router.analytics import stats as routing_stats
from router.analytics.cost import cost_report
from router.store.erasure import Erased, Scope
from router.store.erasure_notices import Notice

log = logging.getLogger(__name__)

DAY_S = 24 * 3600
STATS_FLUSH_S = 2.0  # stats wait this long for rows still queued (a locked database)
USAGE = "usage: /routing stats [chart] | /routing mode live|shadow|off"
CHART_DAYS = 7
CHART_CAPTION = "crabbot routing, last 7 days: tiers, sources, cost against all-medium/all-strong"
CHART_ELSEWHERE = (
    "The chart comes as a picture on Telegram and Discord; here, run"
    " `crabbot stats --since 7d --plot stats.png`."
)
CHART_AT_PROXY = (
    "The routing happens at the proxy (model auto): run `crabbot stats --since 7d --plot"
    " stats.png` where the proxy's database is."
)
REFUSAL = (
    "Sorry, only crabbot's admins may run /routing. Send /whoami to see your user id; whoever"
    " runs crabbot adds it to [admins] in the config."
)
HELP = (
    "I'm crabbot, the family assistant: mention me (or reply to me) in a group, or just write"
    " to me in private, in Chinese, English or Japanese. Each message goes to the model tier it"
    " needs: small talk to a quick model, code and hard problems to a strong one.\n"
    "/reset: forget this conversation\n"
    "/forget: erase what you said here (memory, the routing log's text, what I learned from it)\n"
    "/whoami: your platform and user id (for the admins list)\n"
    "/help: this text\n"
    "/routing stats: how messages were routed, and what it cost (admins)\n"
    "/routing stats chart: the last week as a picture (admins)\n"
    "/routing mode live|shadow|off: how routing decides (admins)"
)

# Command name -> description, for the platforms' command menus.
COMMANDS: dict[str, str] = {
    "help": "what crabbot does",
    "reset": "forget this conversation",
    "forget": "erase what you said here",
    "whoami": "your platform and user id (for the admins list)",
    "routing": "routing stats, or set the routing mode (admins)",
}


@dataclass(frozen=True)
class Command:
    """A chat command, parsed once: '/routing@crabbot_bot stats chart' is routing with the
    arguments stats and chart."""

    name: str
    args: tuple[str, ...] = ()


def parse_command(text: str) -> Command | None:
    """The command in a message's text; None when the text is not a command."""
    words = text.split()
    if not words or not words[0].startswith("/"):
        return None
    return Command(words[0][1:].split("@", 1)[0].lower(), tuple(words[1:]))


@dataclass(frozen=True)
class Text:
    """An answer in words; `table` when its columns should stay aligned (the stats)."""

    text: str
    table: bool = False


@dataclass(frozen=True)
class Picture:
    """An answer as a PNG, with the caption to send it under."""

    png: bytes
    caption: str


Answer = Text | Picture


def _counts(counts: dict[str, int], total: int | None = None) -> str:
    """'cheap 80 (67%) · medium 40 (33%)'; without a total, counts only (shorter lines)."""
    share = (lambda n: f" ({100 * n / total:.0f}%)") if total else (lambda n: "")
    return " · ".join(
        f"{'none' if name == '-' else name} {n}{share(n)}" for name, n in counts.items()
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def format_summary(title: str, summary: routing_stats.Summary) -> list[str]:
    lines = [f"— {title}: {summary.total} decisions"]
    if not summary.total:
        return lines
    agreement, latency = summary.agreement, summary.llm_latency
    lines += [
        f"tier: {_counts(summary.by_tier, summary.total)}",
        f"category: {_counts(summary.by_category)}",
        f"source: {_counts(summary.by_source, summary.total)}",
        f"outcome: {_counts(summary.by_outcome, summary.total)}",
        f"fallbacks {summary.fallbacks} · errors {summary.errors}",
        *(f"  {count} × {reason}" for reason, count in summary.errors_by_reason.items()),
        f"k-NN = LLM: {_rate(agreement.category_rate)} category,"
        f" {_rate(agreement.tier_rate)} tier (n={agreement.compared})",
        f"LLM latency: median {_ms(latency.median_ms)} · p95 {_ms(latency.p95_ms)}"
        f" (n={latency.count})",
    ]
    return lines


class Admin:
    def __init__(
        self,
        router: ModelRouter,
        memory: Memory,
        admins: AdminSettings,
        fixed_model: str | None = None,
        counters: Counter[str] | None = None,
        proxy: ProxyAdmin | None = None,
    ) -> None:
        self.router = router
        # The routing proxy's admin endpoints (upstream model "auto"): its stats, mode, context.
        self.proxy = proxy
        self.memory = memory
        self.admins = admins
        self.fixed_model = fixed_model  # config names one model for every reply: no routing
        # The bot's own counters, shown with the router's in /routing stats.
        self.counters: Counter[str] = Counter() if counters is None else counters
        # The terminal's input history, which /forget at the console empties too.
        self.console_history: PrivateHistory | None = None

    async def heed_erasures(self, notices: list[Notice]) -> None:
        """Another process (`crabbot forget`) erased a console conversation or person: the
        terminal's arrow keys let go of its lines too."""
        erased = any(is_console(notice.conv_key, notice.user_key) for notice in notices)
        if erased and self.console_history is not None:
            self.console_history.forget()

    def is_admin(self, user: ChatUser) -> bool:
        if user.platform == "console":
            return self.admins.console
        ids = {"telegram": self.admins.telegram, "discord": self.admins.discord}.get(
            user.platform, []
        )
        try:
            return int(user.id) in ids
        except (TypeError, ValueError):
            return False

    async def answer(
        self, user: ChatUser, conv_key: str, command: Command, pictures: bool = False
    ) -> Answer:
        """Answer `command` from `user` in the conversation `conv_key`; `pictures` when the
        adapter can send one (the stats chart), else text says where to find it."""
        if command.name == "routing":
            return await self.routing(user, list(command.args), pictures)
        if command.name == "reset":
            return Text(await self.reset(conv_key))
        if command.name == "forget":
            return Text(await self.forget(user, conv_key))
        if command.name in ("help", "start"):
            return Text(HELP)
        if command.name == "whoami":
            return Text(self.whoami(user))
        return Text(f"Unknown command /{command.name}, try /help.")

    async def routing(self, user: ChatUser, args: list[str], pictures: bool = False) -> Answer:
        if not self.is_admin(user):
            return Text(REFUSAL)
        if args == ["stats"]:
            return Text(await self.stats_text(), table=True)
        if [arg.lower() for arg in args] == ["stats", "chart"]:
            if self.proxy is not None:
                return Text(CHART_AT_PROXY)
            if not pictures:
                return Text(CHART_ELSEWHERE)
            return Picture(await self.stats_chart(), CHART_CAPTION)
        if len(args) == 2 and args[0] == "mode":
            return Text(await self._set_mode(args[1]))
        return Text(USAGE)

    async def _set_mode(self, mode: str) -> str:
        mode = mode.lower()
        if mode not in MODES:
            return USAGE
        if self.proxy is not None:
            return await self._set_proxy_mode(mode)
        old = await self.router.set_mode(mode)
        note = " (unchanged)" if old == mode else ""
        lines = [f"routing mode: {old} → {mode}{note}"]
        if self.router.mode != mode:
            lines.append(f"(this process runs with --mode {self.router.mode} until restarted)")
        return "\n".join(lines)

    def _proxy_failed(self, exc: ProxyAdminError) -> str:
        """A failed call to the proxy's admin endpoints: logged, counted, its reason."""
        self.counters["proxy_admin_errors"] += 1
        log.warning("the proxy's admin endpoint: %s", exc.reason)
        return exc.reason

    async def _set_proxy_mode(self, mode: str) -> str:
        assert self.proxy is not None
        try:
            old, now = await self.proxy.set_mode(mode)
        except ProxyAdminError as exc:
            return f"routing mode not changed: {self._proxy_failed(exc)}"
        note = " (unchanged)" if old == mode else ""
        return f"routing mode at the proxy: {old} → {now}{note}"

    def _happened(self, counters: Counter[str]) -> str | None:
        happened = {
            name.replace("_", " "): count for name, count in sorted(counters.items()) if count
        }
        return _counts(happened) if happened else None

    async def _proxy_stats_text(self) -> str:
        assert self.proxy is not None
        lines = [f"crabbot routing at the proxy {self.proxy.where} (model auto)"]
        try:
            stats: ProxyStats = await self.proxy.stats()
        except ProxyAdminError as exc:
            lines.append(f"the proxy's stats could not be read: {self._proxy_failed(exc)}")
        else:
            lines.append(
                f"mode {stats.mode} · map {stats.taxonomy_version} · pool {stats.pool_size}"
            )
            if stats.categorizer_off is not None:
                lines.append(
                    f"LLM categorizer off ({stats.categorizer_off}): the local signal decides alone"
                )
            if (happened := self._happened(Counter(stats.counters))) is not None:
                lines.append(f"proxy since start: {happened}")
            lines.append(stats.retention)
            for window in stats.windows:
                lines += format_summary(window.title, window.summary)
                if window.cost is not None:
                    lines.append(window.cost)
        if (happened := self._happened(Counter(self.router.counters) + self.counters)) is not None:
            lines.append(f"bot since start: {happened}")
        return "\n".join(lines)

    async def stats_text(self, now: float | None = None) -> str:
        if self.proxy is not None:
            return await self._proxy_stats_text()
        now = time.time() if now is None else now
        router = self.router
        await router.log.flush(STATS_FLUSH_S)  # the messages answered a moment ago count too
        head = f"mode {router.mode} · map {router.taxonomy.version} · pool {router.pool_size}"
        lines = ["crabbot routing", head]
        if self.fixed_model is not None:
            lines.append(f"every reply uses {self.fixed_model}; routing is off in config")
        elif not router.routes_locally:
            lines.append("routing happens upstream (model auto); rows below are the proxy's")
        elif router.categorizer is None:
            why = router.categorizer_missing or "disabled in config"
            lines.append(f"LLM categorizer off ({why}): the local signal decides alone")
        # What went wrong or was degraded in this process (failed calls, dropped rows, Markdown
        # sent as plain text, a photo too big), by reason.
        # The router's and the bot's own, summed by name.
        happened = {
            name.replace("_", " "): count
            for name, count in sorted((Counter(router.counters) + self.counters).items())
            if count
        }
        if happened:
            lines.append(f"since start: {_counts(happened)}")
        privacy = router.config.privacy
        kept = (
            f"prompt text {privacy.prompt_days:g} d" if privacy.store_prompts else "no prompt text"
        )
        memory_days = getattr(privacy, "memory_days", None)
        kept += f", memory {memory_days:g} d" if memory_days is not None else ""
        lines.append(f"{router.retention.line()}; kept: {kept}")
        for title, since in (("last 24 h", now - DAY_S), ("all time", None)):
            summary = await routing_stats.summary(router.conn, since)
            lines += format_summary(title, summary)
            if summary.total:
                lines.append((await cost_report(router.conn, router.config, since)).line())
        return "\n".join(lines)

    async def stats_chart(self) -> bytes:
        """The PNG of the last week's routing."""
        from router.analytics.charts import stats_chart  # matplotlib loads on first use only

        since = time.time() - CHART_DAYS * DAY_S
        await self.router.log.flush(STATS_FLUSH_S)
        return await stats_chart(self.router.conn, self.router.config, since, "crabbot, last week")

    def whoami(self, user: ChatUser) -> str:
        if user.platform == "console":
            return (
                f"You are {user.name} at the terminal: admins.console = true makes the person at"
                " the terminal an admin of `crabbot chat`."
            )
        role = "an admin" if self.is_admin(user) else "not an admin"
        return (
            f"You are {user.name} on {user.platform}, user id {user.id} ({role}). To make this"
            f" account an admin, add {user.id} to `{user.platform} = [...]` under [admins] in"
            " crabbot's config and restart it."
        )

    async def forget(self, user: ChatUser, conv_key: str) -> str:
        """/forget: erase what this person said in this conversation (memory, with the answers
        to them and their words quoted in others' replies; the routing log's text; the pool
        entries it taught; at the terminal, its input history), and with a routing proxy what
        it keeps of them too."""
        user_key = user_key_of(user)
        assert user_key is not None
        history = self.console_history if user.platform == "console" else None
        erased = await forget(
            self.router.conn,
            self.memory,
            Scope(conv_key, user_key),
            router=self.router,
            history=history,
        )
        done = f"Done: {erased.line()} of yours from this conversation"
        if self.proxy is not None:
            return await self._forget_at_proxy(user, conv_key, erased, done)
        if erased.empty():
            return "Nothing you said here is kept."
        return f"{done}."

    async def _forget_at_proxy(
        self, user: ChatUser, conv_key: str, erased: Erased, done: str
    ) -> str:
        """/forget with a routing proxy: its routing log, pool and context let go of the person's
        words there too, named as the bot's requests name them: by their key (X-Crabbot-Speaker),
        and, for words a proxy kept before it got one, by the `name` they go by (bot.speakers)."""
        assert self.proxy is not None
        try:
            at_proxy = await self.proxy.forget_person(conv_key, user)
        except ProxyAdminError as exc:
            here = "Nothing you said here is kept by the bot" if erased.empty() else done
            return (
                f"{here}; the routing proxy keeps its own copies of your words:"
                f" {self._proxy_failed(exc)}."
            )
        if erased.empty() and at_proxy.empty():
            return "Nothing you said here is kept."
        return f"{done}; the routing proxy {at_proxy.routing_line()}."

    async def reset(self, conv_key: str) -> str:
        """Forget the conversation's memory and its routing context (the last task, which the
        next message would otherwise continue)."""
        removed = await self.memory.clear(conv_key)
        if self.proxy is not None:
            return await self._reset_at_proxy(conv_key, removed)
        had_context = await self.router.forget(conv_key) if self.router.routes_locally else False
        if removed and had_context:
            return f"Forgot this conversation ({removed} messages) and its routing context."
        if removed:
            return f"Forgot this conversation ({removed} messages)."
        if had_context:
            return "Forgot this conversation's routing context (no messages were kept)."
        return "Nothing to forget."

    async def _reset_at_proxy(self, conv_key: str, removed: int) -> str:
        """/reset with a routing proxy: its context for this conversation is cleared there."""
        assert self.proxy is not None
        forgot = f"Forgot this conversation ({removed} messages)" if removed else "No messages kept"
        try:
            had_context = await self.proxy.reset(conv_key)
        except ProxyAdminError as exc:
            return f"{forgot}; the proxy's routing context is kept: {self._proxy_failed(exc)}."
        if had_context:
            return f"{forgot}, and the proxy forgot its routing context."
        return f"{forgot}; the proxy had no routing context for it."
