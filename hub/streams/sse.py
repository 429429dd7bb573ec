"""The one SSE writer every stream uses: replay from the store, then live, with no gap and no
duplicate at the seam.

The seam: subscribe to the broker first, then read the store. An event committed before the
subscription is in the store; one committed after it is in the queue; one in both is skipped
by id, since ids only grow and the broker delivers in id order.

Two ways to write. Under the hub's own server (``hub.web.protocol``) the request's scope
carries a ``Carrier``, the connection itself. The stream then sends its head, ``retry:``
and replay through ASGI as any response does, and once live hands itself to the connection
and its subscription: from then on the broker's publish writes each event's frame (one
chunk, made once and shared) straight to every subscriber's transport in one pass, and the
ASGI call returns. No task, coroutine or ASGI ``send`` is held or woken per subscriber. The
transport's flow control decides who is slow: while its buffer is over the high-water mark
events queue under the subscription's bounds (overflow ends the stream), and one paused for
longer than ``send_timeout`` is cut off. The clock (``Streams.tick``) writes heartbeats.
Without a carrier (an in-process ASGI client, a HEAD) the stream stays in its ASGI call.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from hub.enums import EventType
from hub.logs import request_id
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


# The scope extension under which the hub's server offers the connection to a stream.
CARRIER = "hub.carrier"


class Carrier(Protocol):
    """The connection a stream can take over (``hub.web.protocol``'s, per connection)."""

    def carry(self, scope: Scope, stream: EventStream) -> tuple[Any, bool] | None:
        """Hand the connection answering ``scope`` to ``stream``: its transport and whether
        the body is chunked, or None if it cannot be handed over (the stream stays in
        ASGI). The connection then tells the stream ``paused()``, ``resumed()`` and
        ``lost()``."""

    def release(self, *, abort: bool) -> None:
        """The stream is done: end the body (or abort the connection)."""

    def gone(self) -> bool:
        """The client has hung up (or the connection is closing)."""
        ...

    def cut(self) -> None:
        """Abort the connection of a stream not handed over (stuck before going live)."""


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
        # Set once the stream writes its own connection (see the module's doc).
        self._carrier: Carrier | None = None
        self._transport: Any = None
        self._chunked = True
        self._finished = False
        self._active = False  # wrote since the clock last looked
        self.write_paused = False
        self._paused_since = 0.0
        self._request_id: str | None = None
        self._pending: list[bytes] = []  # frames taken from a publish, not yet written

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        carrier = scope.get("extensions", {}).get(CARRIER)
        if carrier is not None and scope.get("method") != "HEAD":
            await self._serve_native(scope, send, carrier)
            return
        self._send = send
        self._task = asyncio.current_task()
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.create_task(self._watch_disconnect(receive))
        self._enter()
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
            self._leave()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if not self._disconnected and not self._stalled:
            # Bounded: the client may stop reading at any moment, this one included.
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self._config.send_timeout):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _enter(self) -> None:
        self._streams.open.add(self)
        self._streams.by_owner[self.owner] += 1

    def _leave(self) -> None:
        streams = self._streams
        streams.open.discard(self)
        streams.by_owner[self.owner] -= 1
        if not streams.by_owner[self.owner]:
            del streams.by_owner[self.owner]

    async def _serve_native(self, scope: Scope, send: Send, carrier: Carrier) -> None:
        """The head, ``retry:`` and replay through ASGI, then the connection handed over."""
        self._send = send
        self._task = asyncio.current_task()
        self._carrier = carrier
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        self._enter()
        handed = False
        try:
            await self._write(events.retry(self._config.retry_ms))
            if self._last is not None:
                await self._announce_gap(self._last)
            while not self._done:
                subscription = self._broker.open(self._query)
                self._subscription = subscription
                try:
                    if self._last is not None:
                        await self._replay()
                    if subscription.overflowed:
                        continue  # live events outran the replay: again from where it got
                    if not self._done:
                        handed = self._hand_over(scope, carrier, subscription)
                        if not handed:
                            await self._live(subscription)
                finally:
                    if not handed:
                        self._broker.discard(subscription)
                break
        except _Disconnected:
            self._disconnected = True
        except asyncio.CancelledError:
            if not self._stalled:
                raise
            assert self._task is not None
            self._task.uncancel()
            log.info("a subscriber stopped reading; its stream is cut off")
            carrier.cut()
        finally:
            if not handed:
                self._carrier = None
                self._leave()
        if not handed and not self._disconnected and not self._stalled:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self._config.send_timeout):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _hand_over(self, scope: Scope, carrier: Carrier, subscription: Subscription) -> bool:
        """Give the live stream to its connection and subscription; False if it cannot be."""
        if carrier.gone():
            raise _Disconnected
        if subscription.closed:
            return False  # shutting down, or ended: what is queued goes out through ASGI
        taken = carrier.carry(scope, self)
        if taken is None:
            return False
        self._transport, self._chunked = taken
        self._request_id = request_id.get()
        self._last_write = asyncio.get_running_loop().time()
        self._send = None
        self._task = None
        subscription.attach(self)
        return True

    # -- writing its own connection (the broker calls these, and the connection) ----------

    def deliver(self, event: Event) -> bool:
        last = self._last
        if last is not None and event.id <= last:
            return False
        if self._render is None:
            data = events.chunked(event) if self._chunked else events.frame(event)
        else:
            try:
                frame = self._render(event)
            except Exception:
                # In the publisher's pass: one stream's bad frame must not stop the others.
                log.exception("a stream could not render event %d; it ends", event.id)
                self._finish(abort=False)
                return False
            if frame is None:
                self._last = event.id
                return False
            data = events.chunk(frame) if self._chunked else frame
        self._last = event.id
        pending = self._pending
        pending.append(data)
        if self._is_last is not None and self._is_last(event):
            self._finish(abort=False)
            return False
        return len(pending) == 1

    def send_pending(self) -> None:
        pending = self._pending
        if not pending or self._transport is None:
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        pending.clear()
        self._active = True

    def buffered(self) -> int:
        transport = self._transport
        return 0 if transport is None else int(transport.get_write_buffer_size())

    def subscription_closed(self) -> None:
        # Shutdown, or this client fell too far behind: the stream ends and the client
        # resumes with Last-Event-ID.
        self._finish(abort=False)

    def paused(self) -> None:
        self.write_paused = True
        self._paused_since = asyncio.get_running_loop().time()

    def resumed(self) -> None:
        self.write_paused = False
        self._active = True
        if self._subscription is not None:
            self._subscription.flush()

    def lost(self) -> None:
        self._carrier = None
        self._disconnected = True
        self._finish(abort=True)

    def _write_own(self, data: bytes) -> None:
        self._transport.write(events.chunk(data) if self._chunked else data)

    def _finish(self, *, abort: bool) -> None:
        """The end of a stream that writes its own connection, for whatever reason."""
        if self._finished:
            return
        self._finished = True
        self._done = True
        subscription = self._subscription
        if subscription is not None:
            subscription.sink = None
            self._broker.discard(subscription)
        self._leave()
        if not abort:
            self.send_pending()
        self._pending.clear()
        carrier, self._carrier, self._transport = self._carrier, None, None
        if carrier is not None:
            carrier.release(abort=abort)

    def _check_own(self, now: float) -> None:
        if self.write_paused:
            if now - self._paused_since > self._config.send_timeout:
                self._stalled = True
                token = request_id.set(self._request_id)
                try:
                    log.info("a subscriber stopped reading; its stream is cut off")
                finally:
                    request_id.reset(token)
                self._finish(abort=True)
        elif self._active:
            self._active = False
            self._last_write = now
        elif now - self._last_write >= self._config.heartbeat:
            self._write_own(events.comment())
            self._last_write = now

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
        if self._transport is not None:
            self._finish(abort=False)
        elif self._subscription is not None:
            self._subscription.close()

    def check(self, now: float) -> None:
        """Called by Streams' ticker: end a stuck write, or ask for a heartbeat."""
        if self._transport is not None:
            self._check_own(now)
        elif self._writing_since is not None:
            if now - self._writing_since > self._config.send_timeout and self._task is not None:
                self._stalled = True
                self._task.cancel()
        elif now - self._last_write >= self._config.heartbeat and self._subscription is not None:
            self._heartbeat_due = True
            self._subscription.nudge()

    async def _write(self, data: bytes) -> None:
        if self._disconnected or (self._carrier is not None and self._carrier.gone()):
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
