"""Who sent a message: the platform, the platform's user id, and a display name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatUser:
    platform: str  # "telegram", "discord" or "console"
    id: int | str
    name: str

    @property
    def key(self) -> str:
        """ "platform:id": how the routing log, the pool and memory name a person."""
        return f"{self.platform}:{self.id}"


def user_key_of(user: ChatUser | None) -> str | None:
    """The person's key (ChatUser.key); None for no one."""
    return user.key if user else None
