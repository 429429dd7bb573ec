"""How the hub writes JSON and times: one encoder for everything it stores and sends."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import orjson


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def iso(timestamp: float) -> str:
    """``2026-11-22T10:03:18.123Z``: the ``at`` of every event."""
    seconds = int(timestamp)
    millis = int((timestamp - seconds) * 1000)
    return f"{_iso_seconds(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=8)
def _iso_seconds(seconds: int) -> str:
    # Formatting a date is slow and every event carries one; most share their second.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
