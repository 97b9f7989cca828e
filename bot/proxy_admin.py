"""The bot's side of the routing proxy's admin endpoints (upstream model "auto"): the proxy's
stats and mode with the admin key (CRABBOT_PROXY_ADMIN_KEY), a conversation's context reset and a
person's erasure with the bot's own client key; every failure becomes one line that says why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from bot.chat_user import ChatUser
from bot.speakers import header_safe, speaker_key, speaker_name
from router.analytics.stats import Agreement, Latency, Summary
from router.errors import ReasonError
from router.store.erasure import Erased

ADMIN_HEADER = "X-Crabbot-Admin-Key"
ADMIN_KEY_ENV = "CRABBOT_PROXY_ADMIN_KEY"


class ProxyAdminError(ReasonError):
    """The proxy did not do it; `reason` is one line, with no secret in it."""


@dataclass(frozen=True)
class Window:
    """The proxy's routing over one stretch of time, and its cost line (None: no rows)."""

    title: str
    summary: Summary
    cost: str | None


@dataclass(frozen=True)
class ProxyStats:
    mode: str
    taxonomy_version: str
    pool_size: int
    categorizer_off: str | None
    counters: dict[str, int]
    retention: str
    windows: list[Window]


def _summary(data: dict[str, Any]) -> Summary:
    return Summary(
        since=data["since"],
        total=int(data["total"]),
        by_tier=dict(data["by_tier"]),
        by_category=dict(data["by_category"]),
        by_source=dict(data["by_source"]),
        by_outcome=dict(data["by_outcome"]),
        fallbacks=int(data["fallbacks"]),
        errors=int(data["errors"]),
        errors_by_reason=dict(data["errors_by_reason"]),
        agreement=Agreement(**data["agreement"]),
        llm_latency=Latency(**data["llm_latency"]),
    )


def parse_stats(data: Any) -> ProxyStats:
    """The stats endpoint's answer; a ProxyAdminError when it is not one."""
    try:
        return ProxyStats(
            mode=str(data["mode"]),
            taxonomy_version=str(data["taxonomy_version"]),
            pool_size=int(data["pool_size"]),
            categorizer_off=data.get("categorizer_off"),
            counters={str(k): int(v) for k, v in data.get("counters", {}).items()},
            retention=str(data.get("retention", "")),
            windows=[Window(str(w["title"]), _summary(w), w.get("cost")) for w in data["windows"]],
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ProxyAdminError(
            "the proxy's stats were not understood (not crabbot proxy?)"
        ) from None


class ProxyAdmin:
    """Calls the proxy's /admin endpoints over the upstream's own client (its base URL, its
    client key, its timeouts); a failure is a ProxyAdminError (the caller logs and counts it)."""

    def __init__(self, client: openai.AsyncOpenAI, admin_key: str | None) -> None:
        self.client = client
        self._admin_key = admin_key.strip() if admin_key and admin_key.strip() else None

    @property
    def where(self) -> str:
        """The proxy's URL as a chat may show it: no user or password that the URL carries."""
        url = self.client.base_url
        host = f"[{url.host}]" if ":" in url.host else url.host
        port = f":{url.port}" if url.port else ""
        return f"{url.scheme}://{host}{port}{url.path}".rstrip("/")

    def _admin_headers(self) -> dict[str, str]:
        if self._admin_key is None:
            raise ProxyAdminError(
                f"no admin key: set {ADMIN_KEY_ENV} in the bot's environment to the proxy's"
            )
        return {ADMIN_HEADER: self._admin_key}

    def _reason(self, exc: openai.APIError) -> str:
        if isinstance(exc, openai.APITimeoutError):
            return f"the proxy at {self.where} did not answer in time"
        if isinstance(exc, openai.APIConnectionError):
            return f"the proxy at {self.where} is unreachable"
        if isinstance(exc, openai.APIStatusError):
            code, status = exc.code, exc.status_code
            if code == "admin_key_not_set":
                return f"the proxy has no admin key: set {ADMIN_KEY_ENV} in its environment"
            if code == "invalid_admin_key":
                return f"the proxy refused the admin key ({ADMIN_KEY_ENV} differs from the proxy's)"
            if status == 401:
                return "the proxy refused the bot's client key (OPENAI_API_KEY)"
            if status == 404:
                return f"the upstream at {self.where} has no crabbot admin endpoints"
            return f"the proxy answered HTTP {status}"
        return f"the proxy call failed ({type(exc).__name__})"

    async def _call(self, method: str, path: str, body: dict[str, Any] | None, admin: bool) -> Any:
        headers = self._admin_headers() if admin else {}
        try:
            if method == "GET":
                return await self.client.get(path, cast_to=object, options={"headers": headers})
            return await self.client.post(
                path, cast_to=object, body=body, options={"headers": headers}
            )
        except openai.APIError as exc:
            raise ProxyAdminError(self._reason(exc)) from exc

    async def stats(self) -> ProxyStats:
        return parse_stats(await self._call("GET", "/admin/routing/stats", None, admin=True))

    async def set_mode(self, mode: str) -> tuple[str, str]:
        """(the previous mode, the mode the proxy routes with now)."""
        data = await self._call("POST", "/admin/routing/mode", {"mode": mode}, admin=True)
        try:
            return str(data["previous"]), str(data["mode"])
        except (KeyError, TypeError):
            raise ProxyAdminError("the proxy's answer was not understood") from None

    async def reset(self, session_key: str) -> bool:
        """Clear the proxy's routing context of the conversation the bot names (in the bot's
        key's namespace); True when it had one."""
        data = await self._call(
            "POST", "/admin/context/reset", {"session_key": header_safe(session_key)}, admin=False
        )
        return bool(isinstance(data, dict) and data.get("had_context"))

    async def forget(self, session_key: str, speakers: Sequence[str]) -> Erased:
        """Erase at the proxy what one person said in the conversation the bot names (in the
        bot's key's namespace), both named as the bot's requests name them: the X-Session-Key,
        and each name the proxy may keep the person's words under (their X-Crabbot-Speaker
        key, and the `name` it went by before that). Only prompts and pool entries count."""
        session = header_safe(session_key)
        try:
            return _erased(await self._forget({"session_key": session, "speaker": list(speakers)}))
        except _OneNameOnly:
            # A proxy from before the list (it keys words by `name`): one name a call.
            erased = Erased()
            for speaker in speakers:
                erased += _erased(await self._forget({"session_key": session, "speaker": speaker}))
            return erased

    async def forget_person(self, session_key: str, user: ChatUser) -> Erased:
        """What `user` said in the conversation, under each name the proxy may keep it by:
        their key (X-Crabbot-Speaker) and, for words kept before it got one, their `name`."""
        return await self.forget(session_key, [speaker_key(user), speaker_name(user.name)])

    async def _forget(self, body: dict[str, Any]) -> Any:
        try:
            return await self._call("POST", "/admin/forget", body, admin=False)
        except ProxyAdminError as exc:
            cause = exc.__cause__
            refused = isinstance(cause, openai.BadRequestError) and cause.param == "speaker"
            if refused and isinstance(body["speaker"], list):
                raise _OneNameOnly from exc
            raise


class _OneNameOnly(Exception):
    """The proxy refused `speaker` as a list: it predates it."""


def _erased(data: Any) -> Erased:
    try:
        erased = data["erased"]
        return Erased(prompts=int(erased["prompts"]), pool_entries=int(erased["pool_entries"]))
    except (KeyError, TypeError, ValueError):
        raise ProxyAdminError("the proxy's answer was not understood") from None
