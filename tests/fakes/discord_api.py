"""A fake Discord REST API (the few routes crabbot uses): who the bot is, command sync, sending
and editing messages (JSON or multipart with files), typing, interaction callbacks and the CDN
that serves attachments; records what the bot sends, keeps each of its messages as edits leave
it, and fails edits as a rate limit, a 503 or a lost connection would."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.server import LocalServer

BOT_ID = 900
APP_ID = 901
BOT_USER = {
    "id": str(BOT_ID),
    "username": "crabbot",
    "discriminator": "0",
    "global_name": None,
    "avatar": None,
    "bot": True,
}


def user_payload(user_id: int, name: str) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name.lower(),
        "discriminator": "0",
        "global_name": name,
        "avatar": None,
    }


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py reads a body as JSON only when the content type is exactly application/json.
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"}
    )


MESSAGE_CONTENT_INTENT = 1 << 15


class FakeDiscord:
    """`token`, when set, is the only bot token the REST API accepts (any other gets 401, as
    Discord answers); `gateway_token` likewise for the gateway's IDENTIFY (closed with 4004),
    and `message_content` False closes it with 4014, as when the portal has the intent off."""

    def __init__(
        self,
        token: str | None = None,
        gateway_token: str | None = None,
        message_content: bool = True,
    ) -> None:
        self.token, self.gateway_token = token, gateway_token
        self.message_content = message_content
        self.messages: list[tuple[int, dict[str, Any]]] = []
        self.typing: list[int] = []
        self.callbacks: list[tuple[int, dict[str, Any]]] = []
        self.followups: list[tuple[str, dict[str, Any]]] = []  # (interaction token, body)
        self.deleted: set[int] = set()  # ids of messages deleted by their authors
        self.edits: list[tuple[int, dict[str, Any]]] = []  # (message id, body)
        # What the next message edits meet, one an edit: "rate_limited" (a 429 with Retry-After
        # but no Via header, as Cloudflare answers it: discord.py does not wait it out itself),
        # "unavailable" (a 503), "lost" (the connection closes before the edit is made) or
        # "lost_after" (the edit is made, then the connection closes before the answer).
        self.edit_troubles: list[str] = []
        self.retry_after = 1  # seconds, in a "rate_limited" answer
        self.current: dict[int, tuple[int, str]] = {}  # message id -> (channel, content now)
        self.files: dict[str, bytes] = {}  # attachment name -> bytes, served by the fake CDN
        self.uploads: list[tuple[str, bytes]] = []  # (file name, bytes) the bot sent
        self.downloads: list[str] = []
        self.synced: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self._next_id = 10_000
        app = web.Application(middlewares=[self._auth])
        api = "/api/v10"
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get(f"{api}/users/@me", self._me)
        app.router.add_get(f"{api}/oauth2/applications/@me", self._application)
        app.router.add_put(f"{api}/applications/{{app}}/commands", self._sync)
        app.router.add_post(f"{api}/channels/{{channel}}/messages", self._send)
        app.router.add_patch(f"{api}/channels/{{channel}}/messages/{{message}}", self._edit)
        app.router.add_post(f"{api}/channels/{{channel}}/typing", self._typing)
        app.router.add_post(f"{api}/interactions/{{id}}/{{token}}/callback", self._callback)
        app.router.add_post(f"{api}/webhooks/{{app}}/{{token}}", self._followup)
        app.router.add_get("/attachments/{name}", self._download)
        self.server = LocalServer(app)

    @property
    def api_base(self) -> str:
        return f"{self.server.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"{self.server.url.replace('http://', 'ws://')}/gateway"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        refused = self.token is not None and request.path.startswith("/api/")
        if refused and request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        return await handler(request)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        """HELLO, then the IDENTIFY judged: a wrong token or a privileged intent the portal
        has off closes the socket with Discord's code; else it stays open, quiet."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41_250}, "s": None, "t": None})
        async for frame in ws:
            payload = json.loads(frame.data)
            if payload["op"] != 2:  # a heartbeat
                continue
            identify = payload["d"]
            if self.gateway_token is not None and identify["token"] != self.gateway_token:
                await ws.close(code=4004, message=b"Authentication failed.")
            elif identify["intents"] & MESSAGE_CONTENT_INTENT and not self.message_content:
                await ws.close(code=4014, message=b"Disallowed intent(s).")
        return ws

    async def start(self) -> FakeDiscord:
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop()

    def texts(self, channel_id: int) -> list[str]:
        return [body["content"] for channel, body in self.messages if channel == channel_id]

    def shown(self, channel_id: int) -> list[str]:
        """What each of the bot's messages in the channel says now, oldest first."""
        return [
            content
            for message_id, (channel, content) in sorted(self.current.items())
            if channel == channel_id and message_id not in self.deleted
        ]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 60.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(condition), timeout)

    def attachment(
        self, data: bytes, name: str, content_type: str, size: int | None = None
    ) -> dict[str, Any]:
        """An attachment as the gateway describes it; its URL points at this fake's CDN."""
        self.files[name] = data
        url = f"{self.server.url}/attachments/{name}"
        return {
            "id": str(self.new_id()),
            "filename": name,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }

    async def _download(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.files:
            return web.Response(status=404)
        await self._record(lambda: self.downloads.append(name))
        return web.Response(body=self.files[name], content_type="application/octet-stream")

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _record(self, action: Callable[[], None]) -> None:
        async with self.changed:
            action()
            self.changed.notify_all()

    async def _me(self, request: web.Request) -> web.Response:
        return _json(BOT_USER)

    async def _application(self, request: web.Request) -> web.Response:
        return _json(
            {
                "id": str(APP_ID),
                "name": "crabbot",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": user_payload(1, "Owner"),
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    async def _sync(self, request: web.Request) -> web.Response:
        commands = await request.json()
        await self._record(lambda: self.synced.extend(commands))
        return _json(
            [
                {**command, "id": str(self.new_id()), "application_id": str(APP_ID), "version": "1"}
                for command in commands
            ]
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """A JSON body, or the payload_json part of a multipart one (a message with files)."""
        if request.content_type == "application/json":
            return await request.json()
        form = await request.post()
        for value in form.values():
            if isinstance(value, web.FileField):
                self.uploads.append((value.filename, value.file.read()))
        return json.loads(str(form["payload_json"]))

    async def _send(self, request: web.Request) -> web.Response:
        channel = int(request.match_info["channel"])
        body = await self._body(request)
        await self._record(lambda: self.messages.append((channel, body)))
        reference = body.get("message_reference") or {}
        gone = (
            reference.get("message_id") is not None and int(reference["message_id"]) in self.deleted
        )
        if gone and reference.get("fail_if_not_exists", True):
            return _json(
                {
                    "message": "Invalid Form Body",
                    "code": 50035,
                    "errors": {
                        "message_reference": {
                            "_errors": [
                                {"code": "REPLIES_UNKNOWN_MESSAGE", "message": "Unknown message"}
                            ]
                        }
                    },
                },
                status=400,
            )
        return self._message(channel, body)

    async def _followup(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        body = await self._body(request)
        await self._record(lambda: self.followups.append((token, body)))
        return self._message(0, body)

    async def _edit(self, request: web.Request) -> web.Response:
        channel, message_id = int(request.match_info["channel"]), int(request.match_info["message"])
        body = await self._body(request)
        await self._record(lambda: self.edits.append((message_id, body)))
        if self.edit_troubles:
            return self._troubled_edit(request, channel, message_id, body)
        if message_id not in self.current or message_id in self.deleted:
            return _json({"message": "Unknown Message", "code": 10008}, status=404)
        await self._record(lambda: self.current.update({message_id: (channel, body["content"])}))
        return self._message(channel, body, message_id)

    def _troubled_edit(
        self, request: web.Request, channel: int, message_id: int, body: dict[str, Any]
    ) -> web.Response:
        trouble = self.edit_troubles.pop(0)
        if trouble == "rate_limited":
            limited = {"message": "You are being rate limited.", "global": False}
            response = _json(limited | {"retry_after": float(self.retry_after)}, status=429)
            response.headers["Retry-After"] = str(self.retry_after)
            return response
        if trouble == "unavailable":
            return _json({"message": "503: Service Unavailable", "code": 0}, status=503)
        if trouble == "lost_after":
            self.current[message_id] = (channel, body["content"])
        assert request.transport is not None
        request.transport.close()  # the bot reads no answer at all
        return web.Response()

    def _message(
        self, channel: int, body: dict[str, Any], message_id: int | None = None
    ) -> web.Response:
        if message_id is None:
            message_id = self.new_id()
            if channel:
                self.current[message_id] = (channel, body.get("content", ""))
        return _json(
            {
                "id": str(message_id),
                "channel_id": str(channel),
                "author": BOT_USER,
                "content": body.get("content", ""),
                "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                "edited_timestamp": None,
                "tts": False,
                "mention_everyone": False,
                "mentions": [],
                "mention_roles": [],
                "attachments": [],
                "embeds": [],
                "pinned": False,
                "type": 0,
            }
        )

    async def _typing(self, request: web.Request) -> web.Response:
        channel = int(request.match_info["channel"])
        await self._record(lambda: self.typing.append(channel))
        return web.Response(status=204)

    async def _callback(self, request: web.Request) -> web.Response:
        interaction = int(request.match_info["id"])
        body = await request.json()
        await self._record(lambda: self.callbacks.append((interaction, body)))
        return _json(
            {"interaction": {"id": str(interaction), "type": 2}, "resource": {"type": body["type"]}}
        )
