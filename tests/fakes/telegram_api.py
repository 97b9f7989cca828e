"""A fake Telegram Bot API server: feeds updates (text, photos and albums of them, image files,
voice and audio) to a real python-telegram-bot Application through getUpdates long polling, tells
when the bot has fetched them, serves their files via
getFile and file downloads, takes multipart uploads, records every call the bot makes, keeps the
bot's messages as edits change them, shows drafts, rejects formatting Telegram would reject, can
hold chat actions as a rate limiter's queue would, and fails edits as a flood limit, a 502 or a
lost connection would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from tests.fakes.server import LocalServer

TOKEN = "123456:TEST-TOKEN"
BOT_ID = 123456
BOT_USERNAME = "crabbot_test_bot"
GROUP_ANONYMOUS_BOT_ID = 1087968824  # the placeholder `from` of a message sent as the group
RAW_FIELDS = {"text", "parse_mode", "action", "emoji", "caption"}  # strings sent as they are
GETFILE_LIMIT = 20 * 1024 * 1024  # the Bot API does not hand out bigger files
# The sizes Telegram makes of a 4:3 phone photo (width, height, file_size): its thumbnails
# "s" and "m", then "x", "y" and "w" up to 2560 px on the long side.
PHOTO_SIZES = (
    (90, 68, 1_436),
    (320, 240, 14_983),
    (800, 600, 78_640),
    (1280, 960, 171_502),
    (2560, 1920, 524_118),
)


TEXT_LIMIT = 4096  # a message's text, in UTF-16 units


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def markdown_is_valid(text: str) -> bool:
    """Telegram's legacy Markdown fails on an unclosed entity; an odd count is a fair proxy."""
    rest = text.replace("```", "")
    return all(rest.count(mark) % 2 == 0 for mark in ("*", "_", "`"))


def entities_error(text: str, entities: list[dict[str, Any]]) -> str | None:
    """Why Telegram would refuse these entities, or None: each must lie inside the text, and a
    link must have a host. Telegram names the URL it refused, not where the entity is:
    "entity URL '/docs/a.md' is invalid: URL host is empty". Whether it reads a bare `notes.md`
    as a host (http://notes.md/) is not settled here: the fake refuses anything that is not
    http(s)://host, as a model's relative link (`[notes](notes.md)`) should be."""
    size = utf16_len(text)
    for entity in entities:
        if entity["offset"] < 0 or entity["offset"] + entity["length"] > size:
            return "Bad Request: entity is out of range"
        if entity["type"] == "text_link":
            url = str(entity.get("url"))
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                return f"Bad Request: entity URL '{url}' is invalid: URL host is empty"
    return None


class FakeTelegram:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._updates: list[dict[str, Any]] = []
        self._update_id = 1000
        self._fetched_update_id = 1000  # the bot has acknowledged the updates up to this one
        self._album_id = 0
        self._message_id = 1
        self._closing = False
        self.deleted: set[tuple[int, int]] = set()  # (chat_id, message_id) deleted by users
        # The bot's messages as they stand now, after edits: (chat_id, message_id) -> params.
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.drafts_supported = True  # False: answer sendMessageDraft with 404, as old servers do
        # What the next editMessageText calls meet, one a call: "flood" (a 429 with
        # parameters.retry_after, Telegram's flood control), "bad_gateway" (a 502), "lost" (the
        # connection closes before the edit is made) or "lost_after" (the edit is made, then the
        # connection closes before the answer: the bot cannot tell that it landed).
        self.edit_troubles: list[str] = []
        self.retry_after = 1  # seconds, in a "flood" answer
        self.files: dict[str, tuple[str, bytes, int]] = {}  # file_id -> (path, bytes, size)
        self.uploads: list[tuple[str, str, bytes]] = []  # (method, field, bytes) sent by the bot
        self.downloads: list[str] = []  # file paths the bot downloaded
        # While set, sendChatAction is answered only once it is released (a queue that does not
        # let it through); `held_chat_actions` counts those waiting now.
        self.chat_actions_released: asyncio.Event | None = None
        self.held_chat_actions = 0
        self.changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self.server = LocalServer(app)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> FakeTelegram:
        await self.server.start()
        return self

    async def stop(self) -> None:
        async with self.changed:  # release any long poll still held open
            self._closing = True
            self.changed.notify_all()
        await self.server.stop()

    @property
    def base_url(self) -> str:
        return f"{self.server.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.server.url}/file/bot"

    # -- what the bot did ------------------------------------------------------------------------

    def sent(self, chat_id: int | None = None, method: str = "sendMessage") -> list[dict[str, Any]]:
        return [
            params
            for name, params in self.calls
            if name == method and (chat_id is None or params.get("chat_id") == chat_id)
        ]

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [params["text"] for params in self.sent(chat_id)]

    def shown(self, chat_id: int) -> list[str]:
        """The text of each message the bot sent to the chat, as it reads now."""
        return [
            params["text"]
            for (chat, message_id), params in sorted(self.messages.items())
            if chat == chat_id and (chat, message_id) not in self.deleted
        ]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        """Wait until `condition()` holds; it is checked after every call the bot makes."""
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(condition), timeout)

    # -- feeding updates -------------------------------------------------------------------------

    def _next_message_id(self) -> int:
        self._message_id += 1
        return self._message_id

    async def push_message(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int = 42,
        first_name: str = "Mom",
        chat_type: str | None = None,
        mention: bool = False,
        reply_to_bot: bool = False,
        reply_to_user: str | None = None,
        replied_text: str = "an earlier answer",
        thread_id: int | None = None,
        media: dict[str, Any] | None = None,
        as_group: str | None = None,
        reply_as_group: str | None = None,
    ) -> int:
        """Queue a message update (a group when chat_id < 0); returns its message id. It replies
        to `replied_text`, the bot's (`reply_to_bot`) or a family member's (`reply_to_user`).
        With `media` (from photo(), document(), voice() or audio()), `text` is its caption.
        `as_group`: an anonymous admin posting as the group, with that custom title ("" none);
        `reply_as_group`: the message it replies to was posted so."""
        chat_type = chat_type or ("supergroup" if chat_id < 0 else "private")
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = first_name
        else:
            chat["title"] = "Family"
        entities = []
        if text.startswith("/"):  # Telegram marks a leading command as a bot_command entity
            command = text.split()[0]
            entities.append({"type": "bot_command", "offset": 0, "length": utf16_len(command)})
        if mention:
            handle = f"@{BOT_USERNAME}"
            text = f"{handle} {text}"
            entities.append({"type": "mention", "offset": 0, "length": utf16_len(handle)})
        message: dict[str, Any] = {
            "message_id": self._next_message_id(),
            "date": int(time.time()),
            "chat": chat,
            "from": {"id": user_id, "is_bot": False, "first_name": first_name},
        }
        if as_group is not None:
            message |= self._as_group(chat, as_group)
        words, marks = ("caption", "caption_entities") if media else ("text", "entities")
        if text or not media:
            message[words] = text
        if entities:
            message[marks] = entities
        message |= media or {}
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        if reply_to_bot or reply_to_user or reply_as_group is not None:
            sender = (
                self._me()
                if reply_to_bot
                else {"id": 43, "is_bot": False, "first_name": reply_to_user}
            )
            message["reply_to_message"] = {
                "message_id": 1,
                "date": int(time.time()),
                "chat": chat,
                "from": sender,
                "text": replied_text,
            }
            if reply_as_group is not None:
                message["reply_to_message"] |= self._as_group(chat, reply_as_group)
        async with self.changed:
            self._update_id += 1
            self._updates.append({"update_id": self._update_id, "message": message})
            self.changed.notify_all()
        return int(message["message_id"])

    async def push_album(
        self, chat_id: int, caption: str, photos: list[dict[str, Any]], **options: Any
    ) -> list[int]:
        """Queue an album as Telegram delivers one: a message a photo (from photo() or
        document()), all sharing a new media_group_id, the caption (and a `mention`) on the
        first only; other push_message options go to every part. Returns their message ids."""
        album, mention = self.album_id(), options.pop("mention", False)
        ids = []
        for number, photo in enumerate(photos):
            words, mentioned = (caption, mention) if number == 0 else ("", False)
            part = photo | {"media_group_id": album}
            ids.append(
                await self.push_message(chat_id, words, mention=mentioned, media=part, **options)
            )
        return ids

    def album_id(self) -> str:
        """A new media_group_id, for an album's parts pushed one by one with push_message."""
        self._album_id += 1
        return f"album-{self._album_id}"

    async def wait_fetched(self) -> None:
        """Wait until the bot has fetched (and acknowledged) every update queued so far."""
        await self.wait_until(lambda: self._fetched_update_id >= self._update_id)

    @staticmethod
    def _as_group(chat: dict[str, Any], title: str) -> dict[str, Any]:
        """What Telegram sends for a message an anonymous admin posted as the group: a
        placeholder `from`, the group as `sender_chat`, the admin's custom title if any."""
        fields: dict[str, Any] = {
            "from": {
                "id": GROUP_ANONYMOUS_BOT_ID,
                "is_bot": True,
                "first_name": "Group",
                "username": "GroupAnonymousBot",
            },
            "sender_chat": dict(chat),
        }
        if title:
            fields["author_signature"] = title
        return fields

    async def push_update(self, kind: str, payload: dict[str, Any]) -> None:
        """Queue an update of any kind ("edited_message", "channel_post", "callback_query"...)
        whatever allowed_updates the bot asked for: what the bot's own handlers do with it."""
        async with self.changed:
            self._update_id += 1
            self._updates.append({"update_id": self._update_id, kind: payload})
            self.changed.notify_all()

    def _file(self, data: bytes, suffix: str, size: int | None = None) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1}"
        size = len(data) if size is None else size
        self.files[file_id] = (f"media/{file_id}.{suffix}", data, size)
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size}

    def photo(
        self, data: bytes, sizes: tuple[tuple[int, int, int], ...] = PHOTO_SIZES
    ) -> dict[str, Any]:
        """A photo as Telegram sends it: every size it made, smallest first (all JPEG), each
        (width, height, file_size) as stated. Each size's bytes are `data` followed by its
        width and height, so a test can tell which one was read (photo_bytes)."""
        return {
            "photo": [
                self._file(data + f"@{w}x{h}".encode(), "jpg", size) | {"width": w, "height": h}
                for w, h, size in sizes
            ]
        }

    def photo_bytes(self, photo: dict[str, Any], width: int) -> bytes:
        """The bytes of the size `width` pixels wide of a photo() message."""
        (file_id,) = [p["file_id"] for p in photo["photo"] if p["width"] == width]
        return self.files[file_id][1]

    def document(
        self, data: bytes, mime_type: str, name: str, size: int | None = None
    ) -> dict[str, Any]:
        """A file sent as a file (a picture keeps its full resolution, any type)."""
        file = self._file(data, name.rsplit(".", 1)[-1], size)
        return {"document": file | {"mime_type": mime_type, "file_name": name}}

    def voice(self, data: bytes, duration: int, size: int | None = None) -> dict[str, Any]:
        """A voice message recorded in the app (OGG/Opus)."""
        file = self._file(data, "oga", size)
        return {"voice": file | {"duration": duration, "mime_type": "audio/ogg"}}

    def audio(self, data: bytes, duration: int, name: str = "memo.mp3") -> dict[str, Any]:
        """A sound file sent as music/audio."""
        file = self._file(data, name.rsplit(".", 1)[-1])
        return {
            "audio": file | {"duration": duration, "mime_type": "audio/mpeg", "file_name": name}
        }

    def take_update(self) -> dict[str, Any]:
        """The update queued last, taken off the getUpdates queue (to post it to a webhook)."""
        return self._updates.pop()

    # -- the API ---------------------------------------------------------------------------------

    @staticmethod
    def _me() -> dict[str, Any]:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "crabbot",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    @staticmethod
    def _params(form: Any) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key, value in form.items():
            if key in RAW_FIELDS:
                params[key] = value
                continue
            try:
                params[key] = json.loads(value)
            except (TypeError, ValueError):
                params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return self._error(401, "Unauthorized")
        method = request.match_info["method"]
        form = await request.post()
        for name, value in form.items():  # a multipart upload: the file's bytes
            if isinstance(value, web.FileField):
                self.uploads.append((method, name, value.file.read()))
        params = self._params(form)
        if method == "getUpdates":
            return self._ok(await self._get_updates(params))
        async with self.changed:
            self.calls.append((method, params))
            self.changed.notify_all()
        if method == "getMe":
            return self._ok(self._me())
        if method == "sendChatAction" and self.chat_actions_released is not None:
            await self._hold_chat_action(self.chat_actions_released)
        if method in ("deleteWebhook", "setWebhook", "setMyCommands", "sendChatAction"):
            return self._ok(True)
        if method == "getChatMember":
            return self._ok({"status": "member", "user": self._me()})
        if method in ("sendMessage", "editMessageText", "sendMessageDraft"):
            refused = self._refused_format(params)
            if refused:
                return self._error(400, refused)
        if method == "sendMessage":
            reply_to = params.get("reply_parameters") or {}
            gone = (int(params["chat_id"]), reply_to.get("message_id")) in self.deleted
            if gone and not reply_to.get("allow_sending_without_reply"):
                return self._error(400, "Bad Request: message to be replied not found")
            return self._ok(self._sent_message(params))
        if method == "editMessageText":
            if self.edit_troubles:
                return self._troubled_edit(request, params, self.edit_troubles.pop(0))
            return self._edit(params)
        if method in ("sendPhoto", "sendDocument"):
            return self._ok(self._sent_message(params | {"text": params.get("caption", "")}))
        if method == "getFile":
            return self._get_file(str(params["file_id"]))
        if method == "sendMessageDraft":
            if not self.drafts_supported:
                return self._error(404, "Not Found")
            if int(params["chat_id"]) < 0 or not int(params["draft_id"]):
                return self._error(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
            return self._ok(True)
        return self._error(404, "Not Found")

    async def _hold_chat_action(self, released: asyncio.Event) -> None:
        async with self.changed:
            self.held_chat_actions += 1
            self.changed.notify_all()
        try:
            await released.wait()
        finally:
            async with self.changed:
                self.held_chat_actions -= 1
                self.changed.notify_all()

    def _get_file(self, file_id: str) -> web.Response:
        if file_id not in self.files:
            return self._error(400, "Bad Request: invalid file_id")
        path, _data, size = self.files[file_id]
        if size > GETFILE_LIMIT:
            return self._error(400, "Bad Request: file is too big")
        info = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size}
        return self._ok(info | {"file_path": path})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return web.Response(status=401)
        path = request.match_info["path"]
        found = [data for file_path, data, _size in self.files.values() if file_path == path]
        if not found:
            return web.Response(status=404)
        async with self.changed:
            self.downloads.append(path)
            self.changed.notify_all()
        return web.Response(body=found[0], content_type="application/octet-stream")

    @staticmethod
    def _refused_format(params: dict[str, Any]) -> str | None:
        text = params.get("text") or ""
        if utf16_len(text) > TEXT_LIMIT:  # Telegram counts UTF-16 units: an emoji is two
            return "Bad Request: message is too long"
        if params.get("parse_mode") and not markdown_is_valid(text):
            return "Bad Request: can't parse entities: unclosed entity"
        return entities_error(text, params.get("entities") or [])

    def _edit(self, params: dict[str, Any]) -> web.Response:
        key = (int(params["chat_id"]), int(params["message_id"]))
        current = self.messages.get(key)
        if current is None or key in self.deleted:
            return self._error(400, "Bad Request: message to edit not found")
        if (current["text"], current.get("entities")) == (params["text"], params.get("entities")):
            return self._error(400, "Bad Request: message is not modified")
        self.messages[key] = params
        return self._ok(self._message_json(key[1], params))

    def _troubled_edit(
        self, request: web.Request, params: dict[str, Any], trouble: str
    ) -> web.Response:
        if trouble == "flood":
            description = f"Too Many Requests: retry after {self.retry_after}"
            return self._error(429, description, parameters={"retry_after": self.retry_after})
        if trouble == "bad_gateway":
            return self._error(502, "Bad Gateway")
        if trouble == "lost_after":
            self._edit(params)
        assert request.transport is not None
        request.transport.close()  # the bot reads no answer at all
        return web.Response()

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        async with self.changed:
            # Telegram forgets updates below the offset the bot acknowledged.
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if offset - 1 > self._fetched_update_id:
                self._fetched_update_id = offset - 1
                self.changed.notify_all()
            if not self._updates and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.changed.wait_for(lambda: bool(self._updates) or self._closing), timeout
                    )
            return list(self._updates)

    def _sent_message(self, params: dict[str, Any]) -> dict[str, Any]:
        message_id = self._next_message_id()
        self.messages[(int(params["chat_id"]), message_id)] = params
        return self._message_json(message_id, params)

    def _message_json(self, message_id: int, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params["chat_id"]
        chat = {"id": chat_id, "type": "supergroup" if int(chat_id) < 0 else "private"}
        return {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": chat,
            "from": self._me(),
            "text": params["text"],
        }

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(
        code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> web.Response:
        error: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
        if parameters:
            error["parameters"] = parameters
        return web.json_response(error, status=code)
