"""The one SSE writer every stream uses: replay from the store, then live, with no gap and no
duplicate at the seam.

The seam: subscribe to the broker first, then read the store. An event committed before the
subscription is in the store; one committed after it is in the queue; one in both is skipped
by id, since ids only grow and the broker delivers in id order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from hub.enums import EventType
from hub.store.base import Event, EventQuery, Store
from hub.streams import events
from hub.streams.broker import Broker, Subscription, SubscriptionClosed
from hub.streams.shapes import StreamGap

log = logging.getLogger("hub.streams.sse")

# Memory per stream, whatever the size of its events (callback bodies of up to a megabyte):
# a replay reads pages of at most about REPLAY_PAGE_BYTES of event data (the first page at
# most FIRST_PAGE events, until their size is known), and a batch is handed to the
# connection in writes of about WRITE_BYTES, so a reader that stops reading holds one
# write's copy in the server's buffers, not a whole batch's.
REPLAY_PAGE_BYTES = 4 * 1024 * 1024
FIRST_PAGE = 64
WRITE_BYTES = 256 * 1024

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # Tells nginx-style proxies not to buffer the stream.
    (b"x-accel-buffering", b"no"),
]


@dataclass(frozen=True)
class StreamConfig:
    heartbeat: float
    retry_ms: int
    page_size: int
    send_timeout: float = 30.0


class _Disconnected(Exception):
    pass


class Streams:
    """Every open stream, for what is done to all of them on one clock: a heartbeat for
    those idle for ``heartbeat`` seconds, and the end for one stuck in a write for longer
    than ``send_timeout``. One ticker instead of a timer per write and per wait, which cost
    more than the write itself once a stream has many subscribers."""

    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self.open: set[EventStream] = set()
        # Open streams by the key they were opened for, for its quota.
        self.by_owner: collections.Counter[str] = collections.Counter()

    def count(self, owner: str) -> int:
        return self.by_owner[owner]

    def end_for(self, owners: frozenset[str]) -> None:
        """End the open streams of these keys (revoked): their clients are told nothing
        more, and a reconnect is refused."""
        for stream in list(self.open):
            if stream.owner in owners:
                stream.end()

    def end_channel(self, channel_id: str) -> None:
        """End the open streams of an erased channel."""
        for stream in list(self.open):
            if stream.channel_id == channel_id:
                stream.end()

    def on_channel(self, channel_id: str) -> int:
        """How many streams are open on the channel here."""
        return sum(1 for stream in self.open if stream.channel_id == channel_id)

    def by_channel(self) -> dict[str, int]:
        counts: collections.Counter[str] = collections.Counter()
        for stream in self.open:
            if stream.channel_id is not None:
                counts[stream.channel_id] += 1
        return dict(counts)

    async def tick(self) -> float:
        """One round of the clock; the time until the next."""
        now = asyncio.get_running_loop().time()
        for stream in list(self.open):
            stream.check(now)
        return min(1.0, self.config.heartbeat, self.config.send_timeout)


class EventStream(Response):
    def __init__(
        self,
        store: Store,
        broker: Broker,
        streams: Streams,
        query: EventQuery,
        last_event_id: int | None,
        *,
        is_last: Callable[[Event], bool] | None = None,
        render: Callable[[Event], bytes | None] | None = None,
        owner: str = "",
    ) -> None:
        # No Response.__init__: it would add a content-length, and a stream has none.
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self._store = store
        self._broker = broker
        self._query = query
        self._last = last_event_id
        self._streams = streams
        self._config = streams.config
        self._is_last = is_last
        # Another wire format (smee's); None for an event it leaves out.
        self._render = render
        self.owner = owner
        self.channel_id = query.channel_id
        self._send: Send | None = None
        self._subscription: Subscription | None = None
        self._disconnected = False
        self._done = False
        self._task: asyncio.Task[Any] | None = None
        self._writing_since: float | None = None
        self._last_write = 0.0
        self._stalled = False
        self._heartbeat_due = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        self._task = asyncio.current_task()
        streams = self._streams
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        streams.open.add(self)
        streams.by_owner[self.owner] += 1
        try:
            await self._write(events.retry(self._config.retry_ms))
            await self._stream()
        except _Disconnected:
            pass
        except asyncio.CancelledError:
            if not self._stalled:
                raise
            # Cut off by check(): this task's own cancellation, not the server's.
            assert self._task is not None
            self._task.uncancel()
            log.info("a subscriber stopped reading; its stream is cut off")
        finally:
            streams.open.discard(self)
            streams.by_owner[self.owner] -= 1
            if not streams.by_owner[self.owner]:
                del streams.by_owner[self.owner]
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if not self._disconnected and not self._stalled:
            # Bounded: the client may stop reading at any moment, this one included.
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self._config.send_timeout):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _watch_disconnect(self, receive: Receive) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                self._disconnected = True
                if self._subscription is not None:
                    self._subscription.close()
                return

    def end(self) -> None:
        """End the stream at once, whatever it is doing."""
        self._done = True
        if self._subscription is not None:
            self._subscription.close()

    def check(self, now: float) -> None:
        """Called by Streams' ticker: end a stuck write, or ask for a heartbeat."""
        if self._writing_since is not None:
            if now - self._writing_since > self._config.send_timeout and self._task is not None:
                self._stalled = True
                self._task.cancel()
        elif now - self._last_write >= self._config.heartbeat and self._subscription is not None:
            self._heartbeat_due = True
            self._subscription.nudge()

    async def _write(self, data: bytes) -> None:
        if self._disconnected:
            raise _Disconnected
        assert self._send is not None
        loop = asyncio.get_running_loop()
        self._writing_since = loop.time()
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        self._writing_since = None
        self._last_write = loop.time()

    async def _stream(self) -> None:
        if self._last is not None:
            await self._announce_gap(self._last)
        while not self._done:
            async with self._broker.subscribe(self._query) as subscription:
                self._subscription = subscription
                if self._disconnected:
                    return
                if self._last is not None:
                    await self._replay()
                if subscription.overflowed:
                    # Live events outran our own replay: replay again from where it got to.
                    continue
                await self._live(subscription)
                return

    async def _announce_gap(self, last: int) -> None:
        pruned = await self._store.pruned_through(self._query)
        if last < pruned:
            data = msgspec.json.encode(StreamGap(last_event_id=last, pruned_through=pruned))
            await self._write(events.encode(data, event=EventType.STREAM_GAP))

    async def _replay(self) -> None:
        assert self._last is not None
        most = self._config.page_size
        limit = min(most, FIRST_PAGE)
        while not self._done:
            page = await self._store.events_after(self._query, self._last, limit)
            await self._emit(page)
            if len(page) < limit:
                return
            size = sum(len(event.data) for event in page) or 1
            limit = max(1, min(most, limit * REPLAY_PAGE_BYTES // size))

    async def _live(self, subscription: Subscription) -> None:
        heartbeat = events.comment()
        while not self._done:
            try:
                ready = await subscription.wait(None)
            except SubscriptionClosed:
                # Shutdown, disconnect, or this client fell too far behind: in every case
                # the stream ends and the client resumes with Last-Event-ID.
                return
            if ready:
                await self._emit(subscription.drain())
                subscription.written()
            elif self._heartbeat_due:
                self._heartbeat_due = False
                await self._write(heartbeat)

    async def _emit(self, batch: Sequence[Event]) -> None:
        frames: list[bytes] = []
        size = 0
        for event in batch:
            if self._last is not None and event.id <= self._last:
                continue
            frame = events.frame(event) if self._render is None else self._render(event)
            if frame is None:
                self._last = event.id
                continue
            if frames and size + len(frame) > WRITE_BYTES:
                await self._write(b"".join(frames))
                frames, size = [], 0
            frames.append(frame)
            size += len(frame)
            self._last = event.id
            if self._is_last is not None and self._is_last(event):
                self._done = True
                break
        if frames:
            await self._write(b"".join(frames))
