"""Helpers for the Discord tests: discord.py's own channels, messages and interactions, built
from the payloads the gateway sends, on a client whose REST calls go to the fake Discord API."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import discord

from bot.adapters.discord import CrabbotDiscord, build_client
from bot.runtime import BotCore
from tests.fakes.discord_api import user_payload

GUILD, CHANNEL, DM_CHANNEL = 3000, 3001, 3002
ANN = user_payload(4242, "Ann")


@asynccontextmanager
async def logged_in(core: BotCore) -> AsyncIterator[CrabbotDiscord]:
    """A client of `core` logged in to the fake Discord API; both closed at the block's end."""
    client = build_client(core)
    await client.login("fake-discord-token")
    try:
        yield client
    finally:
        await client.close()
        await core.close()


def role_payload(role_id: int, name: str, bot_id: int | None = None) -> dict[str, Any]:
    """A guild role as the gateway sends it; `bot_id`: the role a bot's invite created."""
    role: dict[str, Any] = {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "hoist": False,
        "position": 1,
        "permissions": "0",
        "managed": bot_id is not None,
        "mentionable": True,
    }
    if bot_id is not None:
        role["tags"] = {"bot_id": str(bot_id)}
    return role


def guild_channel(client: CrabbotDiscord, roles: list[dict] | None = None) -> discord.TextChannel:
    state = client._connection
    data = {"id": str(GUILD), "name": "Family", "roles": roles or []}
    guild = discord.Guild(data=data, state=state)
    return discord.TextChannel(
        state=state,
        guild=guild,
        data={
            "id": str(CHANNEL),
            "type": 0,
            "name": "family",
            "position": 0,
            "guild_id": str(GUILD),
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
        },
    )


def dm_channel(client: CrabbotDiscord) -> discord.DMChannel:
    data = {"id": str(DM_CHANNEL), "type": 1, "recipients": [ANN]}
    return discord.DMChannel(me=client.user, state=client._connection, data=data)


def message_data(channel: Any, content: str, author: dict = ANN, message_id: int = 0) -> dict:
    return {
        "id": str(message_id or 5000 + len(content)),
        "channel_id": str(channel.id),
        "author": author,
        "content": content,
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


def message(
    client: CrabbotDiscord,
    channel: Any,
    content: str,
    mentions: list[dict] | None = None,
    replying_to: dict | None = None,
    attachments: list[dict] | None = None,
    author: dict = ANN,
    role_mentions: list[int] | None = None,
) -> discord.Message:
    """A message from `author` (Ann); `replying_to` is the message data it replies to, as the
    gateway sends it along."""
    data = {
        "id": str(5000 + len(content)),
        "channel_id": str(channel.id),
        "author": author,
        "content": content,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": mentions or [],
        "mention_roles": [str(role_id) for role_id in role_mentions or []],
        "attachments": attachments or [],
        "embeds": [],
        "pinned": False,
        "type": 0,
    }
    if replying_to is not None:
        data["type"] = 19  # a reply
        data["message_reference"] = {
            "message_id": replying_to["id"],
            "channel_id": str(channel.id),
        }
        data["referenced_message"] = replying_to
    return discord.Message(state=client._connection, channel=channel, data=data)


def interaction(client: CrabbotDiscord, user: dict, interaction_id: int) -> discord.Interaction:
    """A /routing command in a DM, as discord.py builds it from the gateway's event."""
    data = slash_event(user, interaction_id, "routing", channel_id=DM_CHANNEL, guild_id=None)
    return discord.Interaction(data=data, state=client._connection)


def routing_command(client: CrabbotDiscord, name: str) -> discord.app_commands.Command:
    group = client.tree.get_command("routing")
    assert isinstance(group, discord.app_commands.Group)
    command = group.get_command(name)
    assert isinstance(command, discord.app_commands.Command)
    return command


def slash_event(
    user: dict,
    interaction_id: int,
    name: str,
    options: list[dict] | None = None,
    *,
    channel_id: int = CHANNEL,
    guild_id: int | None = GUILD,
    roles: tuple[int, ...] = (),
) -> dict:
    """A slash command as the gateway's INTERACTION_CREATE carries it: in a server's channel
    (the user as a member with `roles`) or, with guild_id None, in a DM."""
    data: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": "901",
        "type": 2,
        "token": f"token-{interaction_id}",
        "version": 1,
        "attachment_size_limit": 8 * 1024 * 1024,
        "channel_id": str(channel_id),
        "data": {"id": "1", "name": name, "type": 1, "options": options or []},
        "locale": "en-US",
        "app_permissions": "0",
    }
    if guild_id is None:
        data["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user]}
        data["user"] = user
    else:
        data["guild_id"] = str(guild_id)
        data["channel"] = {
            "id": str(channel_id),
            "type": 0,
            "name": "family",
            "guild_id": str(guild_id),
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "permissions": "0",
        }
        data["member"] = {
            "user": user,
            "roles": [str(role) for role in roles],
            "joined_at": dt.datetime.now(dt.UTC).isoformat(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": "0",
        }
    return data


def subcommand(name: str, **values: Any) -> list[dict]:
    """A subcommand's options (/routing mode mode:off -> subcommand("mode", mode="off"))."""
    types = {bool: 5, str: 3, int: 4}
    options = [{"name": k, "type": types[type(v)], "value": v} for k, v in values.items()]
    return [{"name": name, "type": 1, "options": options}]
