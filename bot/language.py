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


# What the bot says about a picture or a voice message it cannot use; {placeholders} filled in.
MEDIA_REPLIES: dict[str, dict[str, str]] = {
    "image_too_big": {
        "en": "That picture is too big for me ({size:.1f} MB; the limit is {limit:g} MB).",
        "zh-Hans": "这张图片太大了（{size:.1f} MB，上限 {limit:g} MB）。",
        "zh-Hant": "這張圖片太大了（{size:.1f} MB，上限 {limit:g} MB）。",
        "ja": "画像が大きすぎます（{size:.1f} MB、上限は {limit:g} MB）。",
    },
    "image_type": {
        "en": "I can read JPEG, PNG, WebP and GIF pictures, not {kind}.",
        "zh-Hans": "我只能看 JPEG、PNG、WebP 和 GIF 图片，看不了 {kind}。",
        "zh-Hant": "我只能看 JPEG、PNG、WebP 和 GIF 圖片，看不了 {kind}。",
        "ja": "読めるのは JPEG・PNG・WebP・GIF の画像だけで、{kind} は読めません。",
    },
    "voice_too_long": {
        "en": "That voice message is too long for me ({size}; the limit is {limit}).",
        "zh-Hans": "这条语音太长了（{size}，上限 {limit}）。",
        "zh-Hant": "這條語音太長了（{size}，上限 {limit}）。",
        "ja": "音声メッセージが長すぎます（{size}、上限は {limit}）。",
    },
    "voice_failed": {
        "en": "Sorry, I could not make out that voice message. Please try again or type it.",
        "zh-Hans": "抱歉，这条语音我没听清，请再试一次或打字告诉我。",
        "zh-Hant": "抱歉，這條語音我沒聽清，請再試一次或打字告訴我。",
        "ja": "すみません、音声を聞き取れませんでした。もう一度送るか、文字で送ってください。",
    },
    "download_failed": {
        "en": "Sorry, I could not download that file. Please send it again.",
        "zh-Hans": "抱歉，文件没能下载下来，请再发一次。",
        "zh-Hant": "抱歉，檔案沒能下載下來，請再傳一次。",
        "ja": "すみません、ファイルをダウンロードできませんでした。もう一度送ってください。",
    },
}


def media_reply(key: str, text: str, **values: object) -> str:
    """MEDIA_REPLIES[key] in the language of `text` (a caption; English when there is none)."""
    return MEDIA_REPLIES[key][detect_language(text)].format(**values)


# An album's photo that could not be used, named above the answer about the others.
ALBUM_PHOTO_LEFT_OUT: dict[str, str] = {
    "en": "Photo {number} of {total}: {reply}",
    "zh-Hans": "第 {number}/{total} 张：{reply}",
    "zh-Hant": "第 {number}/{total} 張：{reply}",
    "ja": "{total} 枚中 {number} 枚目：{reply}",
}


def album_photo_left_out(text: str, number: int, total: int, reply: str) -> str:
    """Photo `number` of an album of `total` could not be used (`reply` says why), in the
    language of `text`, the album's caption."""
    return ALBUM_PHOTO_LEFT_OUT[detect_language(text)].format(
        number=number, total=total, reply=reply
    )
