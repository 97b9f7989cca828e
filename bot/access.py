"""Who may talk to the bot: the chats and users config allows on each platform (admins always,
the terminal always). Anyone else gets one short line on how to be let in, once per chat and
person while the bot runs, and no model call; every refused message is counted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bot.chat_user import ChatUser
from bot.config import AccessSettings

LET_IN = (
    "Sorry, I only answer the people and chats I was set up for. To be let in, ask whoever runs"
    " me to add {what} under [access] in crabbot's config (/whoami shows your id)."
)


@dataclass(frozen=True)
class Where:
    """Where a message was written: the chat (a Telegram chat id, a Discord channel or thread
    id), a thread's parent channel, the Discord server, the writer's Discord roles, and whether
    the chat is a private one (a Discord DM, a Telegram private chat)."""

    chat: int | None = None
    parent: int | None = None
    server: int | None = None
    roles: tuple[int, ...] = ()
    private: bool = False


class Access:
    def __init__(self, settings: AccessSettings, counters: Counter[str]) -> None:
        self.settings = settings
        self.counters = counters
        self._told: set[tuple[str, int | None, str]] = set()

    def allows(self, user: ChatUser, where: Where, admin: bool) -> bool:
        s = self.settings
        if admin or s.everyone or user.platform == "console":
            return True
        try:
            uid = int(user.id)
        except (TypeError, ValueError):
            return False
        if user.platform == "telegram":
            return uid in s.telegram_users or where.chat in s.telegram_chats
        if user.platform == "discord":
            return (
                uid in s.discord_users
                or bool({where.chat, where.parent} & set(s.discord_channels))
                or (where.server is not None and where.server in s.discord_servers)
                or bool(set(where.roles) & set(s.discord_roles))
            )
        return False

    def refusal(self, user: ChatUser, where: Where) -> str | None:
        """Count a refused message; the line that says how to be let in, the first time this
        person is refused in this chat (None after: a stranger cannot make the bot spam)."""
        self.counters["access_refused"] += 1
        key = (user.platform, where.chat, str(user.id))
        if key in self._told:
            return None
        self._told.add(key)
        if len(self._told) > 10_000:  # a bound on what is remembered; the worst is a repeat
            self._told.clear()
        return self.line(user, where)

    def line(self, user: ChatUser, where: Where) -> str:
        """How `user` is let in `where`: their id (and the chat's, outside a private chat)."""
        what = f"{user.platform}_users = [{user.id}]"
        private = where.private or (where.chat is not None and str(where.chat) == str(user.id))
        if where.chat is not None and not private:
            place = "chats" if user.platform == "telegram" else "channels"
            what += f" (or {user.platform}_{place} = [{where.chat}] for everyone here)"
        return LET_IN.format(what=what)
