"""Bounded in-memory state: job records, served files, request-rate windows.

Nothing here grows without limit: a sandbox left running for days under a demo keeps the
most recent records and files and forgets the oldest, as the real services expire theirs.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

MAX_RECORDS = 1_000
MAX_FILES = 1_000
MAX_FILE_BYTES = 512 * 1024 * 1024


class BoundedMap(Generic[K, V]):
    """A mapping that keeps at most ``capacity`` entries, evicting the oldest inserted."""

    def __init__(self, capacity: int = MAX_RECORDS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def values(self) -> list[V]:
        return list(self._items.values())

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    content_type: str


class FileStore:
    """Outputs and uploads the emulators serve back by URL, bounded in count and bytes."""

    def __init__(self, max_files: int = MAX_FILES, max_bytes: int = MAX_FILE_BYTES) -> None:
        self._files: OrderedDict[str, StoredFile] = OrderedDict()
        self._max_files = max_files
        self._max_bytes = max_bytes
        self._bytes = 0

    def put(self, data: bytes, content_type: str, extension: str) -> str:
        """Store bytes and return their name, ``<random hex>.<extension>``."""
        if len(data) > self._max_bytes:
            raise ValueError("file is larger than the sandbox's file store")
        suffix = extension.strip(".").lower()
        name = secrets.token_hex(16) + (f".{suffix}" if suffix else "")
        self._files[name] = StoredFile(data, content_type)
        self._bytes += len(data)
        while len(self._files) > self._max_files or self._bytes > self._max_bytes:
            _, evicted = self._files.popitem(last=False)
            self._bytes -= len(evicted.data)
        return name

    def get(self, name: str) -> StoredFile | None:
        return self._files.get(name)


class SlidingWindow:
    """At most ``limit`` events per ``period`` seconds; ``limit`` 0 means no limit."""

    def __init__(
        self,
        limit: int,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._period = period
        self._clock = clock
        self._events: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._events and self._events[0] <= now - self._period:
            self._events.popleft()

    def acquire(self) -> int | None:
        """Count one event; if the window is full, count nothing and return the seconds to wait."""
        if self._limit <= 0:
            return None
        now = self._clock()
        self._expire(now)
        if len(self._events) >= self._limit:
            return max(1, math.ceil(self._events[0] + self._period - now))
        self._events.append(now)
        return None

    def remaining(self) -> int | None:
        if self._limit <= 0:
            return None
        self._expire(self._clock())
        return self._limit - len(self._events)
