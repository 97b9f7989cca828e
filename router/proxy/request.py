"""Reading and checking one chat completions request: size limit, JSON shape, the text to route."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from router.proxy.errors import ProxyError, bad_request
from router.proxy.json_body import load_json
from router.text import message_text

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_SESSION_KEY_CHARS = 256
SESSION_HEADER = "x-session-key"
# Who speaks, by a key that stays when their display name changes (a bot's `platform:id`).
SPEAKER_HEADER = "x-crabbot-speaker"


@dataclass(frozen=True)
class ChatRequest:
    """A checked request: what the client asked for and what the router needs from it."""

    model: str
    body: dict[str, Any]
    stream: bool
    wants_usage: bool
    route_text: str
    history: list[dict[str, Any]]
    session_key: str | None
    # Who speaks, so that in a group their context is their own turn: the last user message's
    # `name` (how they show in the history's names), else the end user the body names.
    speaker: str | None = None
    end_user: str | None = None
    # The X-Crabbot-Speaker header: who speaks by a key of their own, not by a display name.
    speaker_key: str | None = None

    @property
    def person(self) -> str | None:
        """Whose words these are, as the proxy keeps and erases them: the speaker's own key
        when the client sends one, else their `name`, else the end user."""
        return self.speaker_key or self.speaker or self.end_user


def too_large(limit: int) -> ProxyError:
    return ProxyError(
        413,
        f"the request body is over the proxy's limit of {limit} bytes",
        code="request_too_large",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused (413) as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _check_message(index: int, message: Any) -> None:
    param = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad_request(f"{param} must be an object", param)
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise bad_request(f"{param}.role must be one of {', '.join(sorted(ROLES))}", param)
    content = message.get("content")
    if content is None:
        if role == "user":
            raise bad_request(f"{param}.content is required for a user message", param)
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_request(f"{param}.content must be a string or an array of parts", param)
    for number, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(f"{param}.content[{number}] must be an object with a type", param)
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise bad_request(f"{param}.content[{number}].text must be a string", param)


def model_body(raw: bytes) -> dict[str, Any]:
    """A request body every endpoint takes: a JSON object naming its model (any endpoint's
    first checks; a 400 ProxyError naming the problem)."""
    body = load_json(raw)
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise bad_request("you must provide a model parameter", "model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("model must be a non-empty string", "model")
    if not (model.isascii() and model.isprintable()):
        # Not a name any provider uses, and one that cannot go in the X-Crabbot-Model header.
        raise bad_request(
            "model must be printable ASCII (no control characters, no letters outside ASCII)",
            "model",
        )
    return body


def last_user_index(messages: list[dict[str, Any]]) -> int | None:
    """Where the last user message is: the text `auto` routes, after the history it reads."""
    return max(
        (index for index, message in enumerate(messages) if message["role"] == "user"),
        default=None,
    )


def stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("stream must be a boolean", "stream")
    return bool(stream)


def session_key_of(session_header: str | None, user: str | None) -> str | None:
    """The conversation's key: the X-Session-Key header, else the body's `user`."""
    session_key = session_header or user or None
    if session_key is not None and len(session_key) > MAX_SESSION_KEY_CHARS:
        raise bad_request(f"the session key is over {MAX_SESSION_KEY_CHARS} characters", "user")
    return session_key


def speaker_key_of(headers: Mapping[str, str]) -> str | None:
    """The X-Crabbot-Speaker header, when sent; a 400 when it is blank or over-long (it would
    otherwise key the person's words where their erasure cannot find them)."""
    given = headers.get(SPEAKER_HEADER)
    if given is None:
        return None
    if not given.strip() or len(given) > MAX_SESSION_KEY_CHARS:
        raise bad_request(
            f"the X-Crabbot-Speaker header must be non-blank and at most {MAX_SESSION_KEY_CHARS}"
            " characters",
            "X-Crabbot-Speaker",
        )
    return given


def end_user_of(body: dict[str, Any], session_header: str | None, user: str | None) -> str | None:
    """The end user the body names: `safety_identifier`, else `user` when the header names the
    conversation (without one, `user` is the conversation's key). Only a routing hint: blank or
    over-long, it names nobody."""
    identifier = body.get("safety_identifier")
    if identifier is not None and not isinstance(identifier, str):
        raise bad_request("safety_identifier must be a string", "safety_identifier")
    for given in (identifier, user if session_header else None):
        if given and given.strip():
            return given if len(given) <= MAX_SESSION_KEY_CHARS else None
    return None


def parse_chat_request(raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
    """Check the body (and the headers that name the conversation and the speaker); raise a
    400 ProxyError naming the first problem."""
    session_header = headers.get(SESSION_HEADER)
    body = model_body(raw)
    model = body["model"]
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array", "messages")
    for index, message in enumerate(messages):
        _check_message(index, message)
    last_user = last_user_index(messages)
    stream = stream_flag(body)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("stream_options must be an object", "stream_options")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("user must be a string", "user")
    return ChatRequest(
        model=model,
        body=body,
        stream=stream,
        wants_usage=bool(options and options.get("include_usage")),
        route_text="" if last_user is None else message_text(messages[last_user]["content"]),
        history=messages if last_user is None else messages[:last_user],
        session_key=session_key_of(session_header, user),
        speaker=speaker_of(messages, last_user),
        end_user=end_user_of(body, session_header, user),
        speaker_key=speaker_key_of(headers),
    )


def speaker_of(messages: list[dict[str, Any]], last_user: int | None) -> str | None:
    """The `name` of the last user message, when it gives one."""
    if last_user is None:
        return None
    name = messages[last_user].get("name")
    return name if isinstance(name, str) and name.strip() else None
