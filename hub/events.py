"""The Event type and its wire format: server-sent event frames.

Framing is a pure function of its inputs. Each event is framed once, when first asked for,
and the same bytes go to every subscriber.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson

CALLBACK_RECEIVED = "callback.received"
STREAM_GAP = "stream.gap"

_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class Event:
    __slots__ = ("_frame", "channel_id", "created_at", "data", "id", "ref", "task_id", "type")

    def __init__(
        self,
        id: int,
        type: str,
        data: bytes,
        *,
        channel_id: str | None = None,
        task_id: str | None = None,
        ref: str | None = None,
        created_at: float | None = None,
    ) -> None:
        self.id = id
        self.type = type
        # The event's JSON payload, already encoded.
        self.data = data
        self.channel_id = channel_id
        # The hub task this event belongs to; only the task engine sets it.
        self.task_id = task_id
        # The correlation id a channel stream filters on with ``?task_id=``: a provider's
        # task id found in a callback, or the hub task id for task events.
        self.ref = ref
        self.created_at = time.time() if created_at is None else created_at
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = encode(self.data, event=self.type, id=self.id)
        return self._frame

    def __repr__(self) -> str:
        return f"Event(id={self.id}, type={self.type!r}, channel_id={self.channel_id!r})"


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


def iso(timestamp: float) -> str:
    """``2026-11-22T10:03:18.123Z``: the ``at`` of every event."""
    seconds = int(timestamp)
    millis = int((timestamp - seconds) * 1000)
    return f"{_iso_seconds(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=8)
def _iso_seconds(seconds: int) -> str:
    # Formatting a date is slow and every event carries one; most share their second.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes) -> Any:
    return orjson.loads(data)
