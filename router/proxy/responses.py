"""POST /v1/responses (OpenAI's Responses API): `auto` routed on the input's last user text with
the earlier items as context, aliases and other names as for chat; forwarded with the model
replaced, streamed or not, and logged with its input and output tokens."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from router.proxy.errors import ProxyError, bad_request
from router.proxy.gateway import CLIENT_GONE, Gateway, Target
from router.proxy.request import (
    SESSION_HEADER,
    ChatRequest,
    end_user_of,
    last_user_index,
    model_body,
    session_key_of,
    speaker_key_of,
    stream_flag,
)
from router.proxy.usage import responses_usage_of

# Content part types whose text is what a person wrote (or the model answered).
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# Item roles kept as routing context; system and developer text is not the user's.
CONTEXT_ROLES = frozenset({"user", "assistant"})


def _item_text(index: int, item: dict[str, Any]) -> str:
    """The text of a message item's content (its text parts joined); a 400 for a malformed one."""
    param = f"input[{index}]"
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request(f"{param}.content must be a string or an array of parts", param)
    texts: list[str] = []
    for number, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(f"{param}.content[{number}] must be an object with a type", param)
        if part["type"] in TEXT_PARTS:
            text = part.get("text")
            if not isinstance(text, str):
                raise bad_request(f"{param}.content[{number}].text must be a string", param)
            texts.append(text)
    return "\n".join(texts)


def _as_messages(items: list[Any]) -> list[dict[str, Any]]:
    """The input items as chat-style {"role", "content"} messages: user and assistant text only
    (function calls, their outputs, reasoning and references carry no user text)."""
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise bad_request(f"{param} must be an object", param)
        role = item.get("role")
        if role is None:
            if not isinstance(item.get("type"), str):
                raise bad_request(f"{param} must have a role or a type", param)
            continue
        if not isinstance(role, str):
            raise bad_request(f"{param}.role must be a string", param)
        text = _item_text(index, item)
        if role in CONTEXT_ROLES:
            messages.append({"role": role, "content": text})
    return messages


def parse_responses_request(raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
    """The checked body (and the headers that name the conversation and the speaker), with what
    the router needs from it in chat terms; a 400 ProxyError naming the first problem."""
    session_header = headers.get(SESSION_HEADER)
    body = model_body(raw)
    model = body["model"]
    given = body.get("input")
    # No input is valid (previous_response_id or a stored prompt can supply it): nothing to read.
    if given is None:
        messages: list[dict[str, Any]] = []
    elif isinstance(given, str):
        messages = [{"role": "user", "content": given}]
    elif isinstance(given, list):
        messages = _as_messages(given)
    else:
        raise bad_request("input must be a string or an array of items", "input")
    last_user = last_user_index(messages)
    given_user = body.get("user")
    user = given_user if isinstance(given_user, str) else None
    return ChatRequest(
        model=model,
        body=body,
        stream=stream_flag(body),
        wants_usage=True,
        route_text="" if last_user is None else messages[last_user]["content"],
        history=messages if last_user is None else messages[:last_user],
        session_key=session_key_of(session_header, user),
        end_user=end_user_of(body, session_header, user),
        speaker_key=speaker_key_of(headers),
    )


def responses_error_event(error: ProxyError) -> bytes:
    """A Responses stream's last event when the provider fails mid-way: the API's own `error`
    event (a chat stream ends with an {"error": ...} chunk instead)."""
    data = {"type": "error", "code": error.code, "message": error.message, "param": error.param}
    return f"event: error\ndata: {json.dumps(data)}\n\n".encode()


class ResponsesEndpoint:
    """The handler, on the gateway's keys, router, provider and logging."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, request: Request) -> Response:
        gateway = self.gateway
        caller, raw = await gateway.admitted(request)
        parsed = parse_responses_request(raw, request.headers)
        gateway.check_model(caller.label, parsed.model)
        target = await gateway.target(parsed, caller)
        body = parsed.body | {"model": target.model}
        try:
            if parsed.stream:
                return await self._stream(body, target)
            return await self._complete(request, body, target)
        except ProxyError as error:
            gateway.failed(target, error)
            return error.response(target.headers)
        except BaseException:
            gateway.router.finish(target.decision, "interrupted", error="the proxy failed")
            raise

    async def _complete(self, request: Request, body: dict[str, Any], target: Target) -> Response:
        answer = await self.gateway.whole_answer(request, target, "/responses", body)
        if answer is None:
            return Response(status_code=CLIENT_GONE)
        raw, data = answer
        if not data.get("model"):
            data["model"] = target.model
            raw = json.dumps(data).encode()
        self.gateway.ended(target, "completed", responses_usage_of(data))
        return Response(raw, media_type="application/json", headers=target.headers)

    async def _stream(self, body: dict[str, Any], target: Target) -> Response:
        stream = await self.gateway.provider.stream(
            "/responses", body | {"stream": True}, read_usage=responses_usage_of
        )
        headers = target.headers | {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        # The gateway's relay: events as they come, a broken stream's error as the last event, and
        # the row ended with the usage of response.completed (or as client_gone).
        return StreamingResponse(
            self.gateway.relay(stream, target, responses_error_event),
            media_type="text/event-stream",
            headers=headers,
        )
