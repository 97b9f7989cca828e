"""Who sent a message: the platform, the platform's user id, and a display name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatUser:
    platform: str  # "telegram", "discord" or "console"
    id: int | str
    name: str


def user_key_of(user: ChatUser | None) -> str | None:
    """ "platform:id": how the routing log, the pool and memory name a person."""
    return f"{user.platform}:{user.id}" if user else None
