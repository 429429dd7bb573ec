"""The wire format of a stream: server-sent event frames.

Framing is a pure function of its inputs. Each event is framed once, when first asked for,
and the same bytes go to every subscriber.
"""

from __future__ import annotations

import re

from hub.store.base import Event

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def frame(event: Event) -> bytes:
    """The event's frame, made on first use and kept on the event."""
    framed = event.frame
    if framed is None:
        framed = event.frame = encode(event.data, event=event.type, id=event.id)
    return framed


# The last event chunked, and its chunk: a publish writes one event to every subscriber in
# turn, so one entry serves them all without a slot on every event.
_last_chunked: tuple[Event | None, bytes] = (None, b"")


def chunked(event: Event) -> bytes:
    """The event's frame as one HTTP/1.1 chunk, for a stream that writes its own
    connection."""
    global _last_chunked
    last, wire = _last_chunked
    if last is not event:
        wire = chunk(frame(event))
        _last_chunked = (event, wire)
    return wire


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


# The chunk that ends a chunked body.
LAST_CHUNK = b"0\r\n\r\n"


def encode(data: bytes | str, *, event: str | None = None, id: int | str | None = None) -> bytes:
    """One SSE frame. Line breaks in ``data`` become several ``data:`` lines, as the spec
    requires; ``event`` and ``id`` cannot hold line breaks (they would forge fields)."""
    if isinstance(data, str):
        data = data.encode()
    parts: list[bytes] = []
    if id is not None:
        parts.append(b"id: " + _field("id", str(id)) + b"\n")
    if event is not None:
        parts.append(b"event: " + _field("event", event) + b"\n")
    for line in _LINE_BREAK.split(data):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)


def comment(text: str = "") -> bytes:
    return b": " + _field("comment", text) + b"\n\n"


def retry(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds


def _field(name: str, value: str) -> bytes:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"an SSE {name} cannot contain a line break or NUL")
    return value.encode()
