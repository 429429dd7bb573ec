"""Who is watching a channel: its open streams, counted across every replica.

This replica's streams are counted as they are; other replicas' are read from rows each of
them writes every ``every`` seconds (PostgreSQL), and a row older than three beats is a
replica that stopped, so it no longer counts. With SQLite there is one process: nothing is
written."""

from __future__ import annotations

import secrets
import time

from hub.store.base import Store
from hub.streams.sse import Streams

BEAT_SECONDS = 5.0
STALE_BEATS = 3


class Presence:
    def __init__(
        self, store: Store, streams: Streams, *, shared: bool, every: float = BEAT_SECONDS
    ) -> None:
        self._store = store
        self._streams = streams
        self.shared = shared
        self.every = every
        self.replica = secrets.token_hex(8)
        self._reported: dict[str, int] = {}

    async def beat(self) -> float:
        """Report this replica's counts (the ``presence`` loop); the time to the next."""
        counts = self._streams.by_channel()
        if counts or self._reported:
            await self._store.set_presence(self.replica, counts, time.time())
        self._reported = counts
        return self.every

    async def subscribers(self, channel_id: str) -> int:
        here = self._streams.on_channel(channel_id)
        if not self.shared:
            return here
        since = time.time() - STALE_BEATS * self.every
        return here + await self._store.subscribers(channel_id, since, self.replica)
