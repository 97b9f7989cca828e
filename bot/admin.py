"""The chat commands every adapter shares: /routing stats, /routing mode, /reset, /whoami and
/help, with the admin check. Returns text; the adapter only delivers it."""

from __future__ import annotations

import time
from collections import Counter

from bot.chat_user import ChatUser
from bot.config import AdminSettings
from bot.memory import Memory
from router import MODES, ModelRouter
from router.analytics import stats as routing_stats
from router.analytics.cost import cost_report

DAY_S = 24 * 3600
STATS_FLUSH_S = 2.0  # stats wait this long for rows still queued (a locked database)
USAGE = "usage: /routing stats [chart] | /routing mode live|shadow|off"
CHART_DAYS = 7
CHART_CAPTION = "crabbot routing, last 7 days: tiers, sources, cost against all-medium/all-strong"
CHART_ELSEWHERE = (
    "The chart comes as a picture on Telegram and Discord; here, run"
    " `crabbot stats --since 7d --plot stats.png`."
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
    "whoami": "your platform and user id (for the admins list)",
    "routing": "routing stats, or set the routing mode (admins)",
}


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
    ) -> None:
        self.router = router
        self.memory = memory
        self.admins = admins
        self.fixed_model = fixed_model  # config names one model for every reply: no routing
        self.counters: Counter[str] = Counter() if counters is None else counters  # the bot's

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

    async def dispatch(self, user: ChatUser, conv_key: str, text: str) -> str | None:
        """Answer a command message ('/routing mode live', '/reset@crabbot_bot'), or return None
        when `text` is not one of ours."""
        words = text.split()
        if not words or not words[0].startswith("/"):
            return None
        name = words[0][1:].split("@", 1)[0].lower()
        if name == "routing":
            return await self.routing(user, words[1:])
        if name == "reset":
            return await self.reset(conv_key)
        if name in ("help", "start"):
            return HELP
        if name == "whoami":
            return self.whoami(user)
        return f"Unknown command /{name}, try /help."

    async def routing(self, user: ChatUser, args: list[str]) -> str:
        if not self.is_admin(user):
            return REFUSAL
        if args == ["stats"]:
            return await self.stats_text()
        if [arg.lower() for arg in args] == ["stats", "chart"]:
            return CHART_ELSEWHERE  # an adapter that can send pictures asks stats_chart first
        if len(args) == 2 and args[0] == "mode":
            return await self._set_mode(args[1])
        return USAGE

    async def stats(self, user: ChatUser) -> str:
        return await self.stats_text() if self.is_admin(user) else REFUSAL

    async def set_mode(self, user: ChatUser, mode: str) -> str:
        return await self._set_mode(mode) if self.is_admin(user) else REFUSAL

    async def _set_mode(self, mode: str) -> str:
        mode = mode.lower()
        if mode not in MODES:
            return USAGE
        old = await self.router.set_mode(mode)
        note = " (unchanged)" if old == mode else ""
        lines = [f"routing mode: {old} → {mode}{note}"]
        if self.router.mode != mode:
            lines.append(f"(this process runs with --mode {self.router.mode} until restarted)")
        return "\n".join(lines)

    async def stats_text(self, now: float | None = None) -> str:
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
        for title, since in (("last 24 h", now - DAY_S), ("all time", None)):
            summary = await routing_stats.summary(router.conn, since)
            lines += format_summary(title, summary)
            if summary.total:
                lines.append((await cost_report(router.conn, router.config, since)).line())
        return "\n".join(lines)

    async def stats_chart(self, user: ChatUser, text: str) -> bytes | None:
        """The PNG for an admin's '/routing stats chart' (the last week); None for any other
        text or user, which `dispatch` answers."""
        words = text.split()
        if not words or words[0][1:].split("@", 1)[0].lower() != "routing":
            return None
        if [w.lower() for w in words[1:]] != ["stats", "chart"] or not self.is_admin(user):
            return None
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

    async def reset(self, conv_key: str) -> str:
        """Forget the conversation's memory and its routing context (the last task, which the
        next message would otherwise continue)."""
        removed = await self.memory.clear(conv_key)
        had_context = await self.router.forget(conv_key) if self.router.routes_locally else False
        if removed and had_context:
            return f"Forgot this conversation ({removed} messages) and its routing context."
        if removed:
            return f"Forgot this conversation ({removed} messages)."
        if had_context:
            return "Forgot this conversation's routing context (no messages were kept)."
        return "Nothing to forget."
