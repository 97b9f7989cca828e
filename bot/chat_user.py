"""Who sent a message: the platform, the platform's user id, and a display name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatUser:
    platform: str  # "telegram", "discord" or "console"
    id: int | str
    name: str
