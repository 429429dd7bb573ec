"""Intake of a callback: read the body within bounds, describe it, and turn it into a
delivery (the raw bytes, kept) and the ``callback.received`` event it publishes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request

from hub import events
from hub.errors import HubError
from hub.store.base import Delivery

# Where providers put their task id, most specific first.
_ID_KEYS = (
    "task_id", "taskId", "exec_id", "predictionID", "prediction_id", "request_id",
    "session_id", "id",
)  # fmt: skip
MAX_REF_LENGTH = 200


async def read_body(request: Request, limit: int, within: float = 30.0) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed ``limit`` (before it is all
    read), or 408 if it takes longer than ``within`` seconds to arrive (a sender trickling
    bytes would otherwise hold a connection and its buffer as long as it likes)."""
    try:
        async with asyncio.timeout(within):
            return await _read_body(request, limit)
    except TimeoutError:
        raise HubError(408, "request_timeout", f"the body took longer than {within:g} s") from None


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = HubError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        # ASCII digits only: str.isdigit() also takes "³", which int() then refuses.
        if not (declared.isascii() and declared.isdigit()):
            raise HubError(400, "bad_request", "content-length is not a number")
        # More digits than any limit has is too large, and int() refuses over 4300 of them.
        digits = declared.lstrip("0")
        if len(digits) > len(str(limit)) or int(digits or "0") > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse(content_type: str, body: bytes) -> tuple[Any, str | None]:
    """The body as the event shows it: parsed JSON, a form as an object, else text.

    Returns ``(body, encoding)`` where encoding is ``"base64"`` for bytes that are not text.
    A body that claims JSON but does not parse is kept as text: nothing is refused for form.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if (
        media == "application/json"
        or media.endswith("+json")
        or (not media and body[:1] in (b"{", b"["))
    ):
        try:
            return orjson.loads(body), None
        except orjson.JSONDecodeError:
            pass
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"
    if media == "application/x-www-form-urlencoded":
        form: dict[str, Any] = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            if key in form:
                previous = form[key]
                form[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                form[key] = value
        return form, None
    return text, None


def find_ref(body: Any) -> str | None:
    """The provider task id a callback is about, if its body names one."""
    if not isinstance(body, dict):
        return None
    candidates = [body]
    nested = body.get("data")
    if isinstance(nested, dict):
        candidates.append(nested)
    for candidate in candidates:
        for key in _ID_KEYS:
            value = candidate.get(key)
            if isinstance(value, bool) or not isinstance(value, str | int):
                continue
            ref = str(value)
            if 0 < len(ref) <= MAX_REF_LENGTH:
                return ref
    return None


def channel_delivery(
    request: Request,
    token: str,
    channel_id: str,
    body: bytes,
    received_at: float,
    max_event_body: int,
) -> Delivery:
    """A callback to a channel's URL, and the ``callback.received`` event it publishes."""
    content_type = request.headers.get("content-type", "")
    parsed, encoding = parse(content_type, body)
    ref = find_ref(parsed)
    data: dict[str, Any] = {"channel_id": channel_id}
    if ref is not None:
        data["task_id"] = ref
    data["content_type"] = content_type
    if len(body) > max_event_body:
        # Kept byte for byte in the store; too large to push to every subscriber.
        data["body"] = None
        data["body_truncated"] = True
    else:
        data["body"] = parsed
        if encoding is not None:
            data["body_encoding"] = encoding
    data["size"] = len(body)
    data["at"] = events.iso(received_at)
    # As a request inspector shows them (and smee.io's stream carries them).
    data["headers"] = _headers(request)
    data["query"] = _query(request)
    return raw_delivery(
        request, token, body, received_at, channel_id, None, ref, orjson.dumps(data)
    )


def raw_delivery(
    request: Request,
    token: str,
    body: bytes,
    received_at: float,
    channel_id: str | None,
    task_id: str | None,
    ref: str | None,
    event_data: bytes | None,
) -> Delivery:
    headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw]
    return Delivery(
        channel_id=channel_id,
        token_hash=hashlib.sha256(token.encode()).digest(),
        body_sha256=hashlib.sha256(body).digest(),
        content_type=request.headers.get("content-type", ""),
        headers=orjson.dumps(headers),
        body=body,
        received_at=received_at,
        task_id=task_id,
        ref=ref,
        event_data=event_data,
    )


def _headers(request: Request) -> dict[str, str]:
    """Header name -> value, repeated headers joined with ", " (as HTTP allows)."""
    joined: dict[str, str] = {}
    for raw_name, raw_value in request.headers.raw:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return joined


def _query(request: Request) -> dict[str, str | list[str]]:
    query: dict[str, str | list[str]] = {}
    for name, value in request.query_params.multi_items():
        present = query.get(name)
        if present is None:
            query[name] = value
        elif isinstance(present, list):
            present.append(value)
        else:
            query[name] = [present, value]
    return query
