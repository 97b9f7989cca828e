"""What a message must be before any model sees it: no longer than its platform lets a message
be (a self-hosted Bot API server may pass on more; crabbot does not send it on to a model)."""

from __future__ import annotations

# Characters of text a message may have on each platform: Telegram's 4096, Discord's 4000 (with
# Nitro; 2000 without). The terminal has none: a paste of any length is one message there.
TEXT_LIMITS: dict[str, int] = {"telegram": 4096, "discord": 4000}
PLATFORM_NAMES = {"telegram": "Telegram", "discord": "Discord"}


def too_long(platform: str, text: str) -> str | None:
    """The one line that refuses a text longer than its platform allows; None when it fits."""
    limit = TEXT_LIMITS.get(platform)
    if limit is None or len(text) <= limit:
        return None
    name = PLATFORM_NAMES.get(platform, platform)
    return (
        f"That message is too long for me: {len(text):,} characters, and {name} messages hold"
        f" at most {limit:,}. Send a shorter one, or the important part."
    )
