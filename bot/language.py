"""Which of crabbot's languages a message is in (by script, no model), and the short texts the
bot itself says in each of them."""

from __future__ import annotations

# A handful of characters that exist only in Traditional Chinese: enough to answer in kind.
_TRADITIONAL = set("們這個說會來時對還發點問題學國機從後裡過麼嗎讓為與體經動寫應該實現開關頭")

APOLOGIES: dict[str, str] = {
    "en": "Sorry, I can't reach my brain right now. Please try again in a moment.",
    "zh-Hans": "抱歉，我暂时连不上，请稍后再试。",
    "zh-Hant": "抱歉，我暫時連不上，請稍後再試。",
    "ja": "すみません、今は応答できません。少し後でもう一度お試しください。",
}


def detect_language(text: str) -> str:
    """'ja' when there is kana, 'zh-Hant' / 'zh-Hans' for Han text, else 'en'."""
    han = traditional = 0
    for ch in text:
        code = ord(ch)
        if 0x3040 <= code <= 0x30FF:
            return "ja"
        if 0x4E00 <= code <= 0x9FFF:
            han += 1
            traditional += ch in _TRADITIONAL
    if han:
        return "zh-Hant" if traditional else "zh-Hans"
    return "en"


def apology(text: str) -> str:
    """The bot's apology for a failed reply, in the language `text` was written in."""
    return APOLOGIES[detect_language(text)]
