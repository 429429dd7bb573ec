"""Intake of a callback: describe what arrived, and turn it into a delivery (the raw
bytes, kept) and the ``callback.received`` event it publishes."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec
import orjson
from msgspec import UNSET

from hub.formats import dumps, iso
from hub.inbox.shapes import DELIVERY_IDS, CallbackEvent
from hub.shapes import given
from hub.store import event_bodies
from hub.store.base import Delivery

# Where providers put their task id, most specific first: only keys that name a task (a
# bare "id" names whatever the body is about: an order, an event). A channel that wants
# another key names it with task_id_path.
_ID_KEYS = (
    "task_id", "taskId", "exec_id", "predictionID", "prediction_id", "request_id",
    "requestId", "session_id", "job_id", "jobId",
)  # fmt: skip
MAX_REF_LENGTH = 200
# Where a sender names its delivery, first present wins: that id alone decides dedupe.
SENDER_ID_HEADERS = (b"webhook-id", b"svix-id", b"x-github-delivery", b"idempotency-key")
MAX_SENDER_ID = 256
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Arrival:
    """A POST to a callback URL as it came: which URL, its headers as sent, its raw query
    string and body, and when it was read."""

    # Identifies the callback URL it came to (its verified claims, not the token's text).
    url_digest: bytes
    headers: Sequence[tuple[bytes, bytes]]
    query: str
    body: bytes
    received_at: float

    @property
    def content_type(self) -> str:
        for name, value in self.headers:
            if name.lower() == b"content-type":
                return value.decode("latin-1")
        return ""


def parse(content_type: str, body: bytes) -> tuple[Any, Literal["base64"] | None]:
    """The body as the event shows it: parsed JSON, a form as an object, else text.

    Returns ``(body, encoding)`` where encoding is ``"base64"`` for bytes that are not text.
    A body that claims JSON but does not parse is kept as text: nothing is refused for form.
    """
    value, kind = _parse(content_type, body)
    return value, "base64" if kind == "base64" else None


# How the event shows a body: "json", "text", "base64" (hub.store.event_bodies can put
# each back from the raw bytes), or "form".
_Kind = Literal["json", "text", "base64", "form"]


def _parse(content_type: str, body: bytes) -> tuple[Any, _Kind]:
    media = content_type.split(";", 1)[0].strip().lower()
    if (
        media == "application/json"
        or media.endswith("+json")
        or (not media and body[:1] in (b"{", b"["))
    ):
        try:
            return orjson.loads(body), "json"
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
        return form, "form"
    return text, "text"


def find_ref(body: Any, path: str | None = None) -> str | None:
    """The provider task id a callback is about, if its body names one (at ``path``, a
    dotted path, if the channel gave one)."""
    if not isinstance(body, dict):
        return None
    if path is not None:
        value: Any = body
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        return _ref(value)
    candidates = [body]
    nested = body.get("data")
    if isinstance(nested, dict):
        candidates.append(nested)
    for candidate in candidates:
        for key in _ID_KEYS:
            ref = _ref(candidate.get(key))
            if ref is not None:
                return ref
    return None


def _ref(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    ref = str(value)
    return ref if 0 < len(ref) <= MAX_REF_LENGTH else None


def dedupe_key(arrival: Arrival, body_sha256: bytes | None = None) -> bytes:
    """What makes two deliveries to a channel the same: the sender's delivery id where it
    sends one, else the body and the query string together."""
    for wanted in SENDER_ID_HEADERS:
        for name, value in arrival.headers:
            if name.lower() == wanted and value.strip():
                return hashlib.sha256(b"id\0" + value.strip()[:MAX_SENDER_ID]).digest()
    body = body_sha256 if body_sha256 is not None else hashlib.sha256(arrival.body).digest()
    return hashlib.sha256(b"body\0" + body + arrival.query.encode("latin-1")).digest()


def channel_delivery(
    arrival: Arrival,
    channel_id: str,
    max_event_body: int,
    *,
    verified: bool = False,
    url_id: str | None = None,
    dedupe_window: float | None = None,
    task_id_path: str | None = None,
) -> Delivery:
    """A callback to a channel's URL, and the ``callback.received`` event it publishes;
    deduped over ``dedupe_window`` seconds (None: never)."""
    content_type = arrival.content_type
    body = arrival.body
    parsed, kind = _parse(content_type, body)
    ref = find_ref(parsed, task_id_path)
    # Too large to push to every subscriber: kept byte for byte in the store only.
    truncated = len(body) > max_event_body
    public_id = new_delivery_id()
    raw_headers, headers = _both_headers(arrival.headers)
    digest = hashlib.sha256(body).digest()
    # Encoded without its body, which is put in after: the store keeps this stub and the
    # body once, in the delivery (see hub.store.event_bodies).
    stub = _encode(
        CallbackEvent(
            channel_id=channel_id,
            delivery_id=public_id,
            task_id=given(ref),
            verified=True if verified else UNSET,
            content_type=content_type,
            body=None,
            body_encoding="base64" if kind == "base64" and not truncated else UNSET,
            body_truncated=True if truncated else UNSET,
            size=len(body),
            at=iso(arrival.received_at),
            headers=headers,
            query=_query(arrival.query),
        )
    )
    at: int | None = None
    form: str | None = None
    if truncated:
        data = stub
    else:
        shown = _encode(parsed)
        at = event_bodies.placeholder_at(stub)
        data = b"".join((stub[:at], shown, stub[at + len(event_bodies.PLACEHOLDER) :]))
        if kind == "json":
            form = "raw" if shown == body else "json"
        elif kind != "form":
            form = kind
        else:
            at = None  # a form's object cannot be put back from the bytes alone: inline
    return Delivery(
        channel_id=channel_id,
        token_hash=arrival.url_digest,
        body_sha256=digest,
        content_type=content_type,
        headers=raw_headers,
        body=body,
        received_at=arrival.received_at,
        task_id=None,
        ref=ref,
        event_data=data,
        public_id=public_id,
        query=arrival.query,
        verified=verified,
        url_id=url_id,
        dedupe_key=None if dedupe_window is None else dedupe_key(arrival, digest),
        dedupe_until=arrival.received_at + (dedupe_window or 0.0),
        event_stub=stub if form is not None else None,
        event_body_at=at if form is not None else None,
        event_body_form=form,
    )


def raw_delivery(
    arrival: Arrival,
    channel_id: str | None,
    task_id: str | None,
    ref: str | None,
    event_data: bytes | None,
) -> Delivery:
    return Delivery(
        channel_id=channel_id,
        token_hash=arrival.url_digest,
        body_sha256=hashlib.sha256(arrival.body).digest(),
        content_type=arrival.content_type,
        headers=_raw_headers(arrival.headers),
        body=arrival.body,
        received_at=arrival.received_at,
        task_id=task_id,
        ref=ref,
        event_data=event_data,
    )


def _raw_headers(raw: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The headers as received: a JSON list of [name, value] pairs."""
    return dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in raw])


def _both_headers(raw: Sequence[tuple[bytes, bytes]]) -> tuple[bytes, dict[str, str]]:
    """In one pass: the headers as received (a JSON list of [name, value] pairs, for the
    delivery) and as the event shows them: name -> value, lowercased, repeated headers
    joined with ", " (as HTTP allows), as a request inspector (and smee.io) shows them."""
    pairs: list[list[str]] = []
    joined: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        pairs.append([name, value])
        name = name.lower()
        joined[name] = f"{joined[name]}, {value}" if name in joined else value
    return dumps(pairs), joined


def new_delivery_id() -> str:
    """A fresh ``dlv_`` id: 12 random bytes from a pool refilled from the OS's random
    source, rather than a call into it for every callback."""
    global _pool, _taken
    if _taken + 12 > len(_pool):
        _pool, _taken = os.urandom(12 * 256), 0
    drawn = _pool[_taken : _taken + 12]
    _taken += 12
    return f"{DELIVERY_IDS.prefix}_{drawn.hex()}"


_pool = b""
_taken = 0


def _query(raw: str) -> dict[str, str | list[str]]:
    query: dict[str, str | list[str]] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        present = query.get(name)
        if present is None:
            query[name] = value
        elif isinstance(present, list):
            present.append(value)
        else:
            query[name] = [present, value]
    return query
