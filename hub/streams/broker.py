"""In-process fan-out of committed events to stream subscribers.

Each subscriber has a bounded queue of events. Publishing never waits: an event goes into
every matching queue at once. The slow-subscriber policy: a subscriber whose queue is full
is marked ``overflowed`` and closed. It is never allowed to hold memory or slow the others;
its stream ends and the client resumes from ``Last-Event-ID``, replayed from the store.

A queue is full at ``maxsize`` events or at ``max_bytes`` of event data, whichever comes
first: events carry callback bodies of up to a megabyte, and a thousand of those queued
for one reader that stopped reading would pin a gigabyte. The bytes a stream has drained
but not yet written count too, until it says they are written: a reader stuck in a write
holds them as surely as its queue does.

A subscription may have a ``sink``: a stream that writes to its connection itself (see
``hub.streams.sse``). Then a push goes straight to the sink, in the publisher's own pass over
the subscribers, with no queue, no task wake and no await, while the connection takes
writes; once the connection's flow control pauses it, events queue under the same bounds,
and the sink is given them when the connection resumes (``flush``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from hub.store.base import Event, EventQuery

# Each queued event also holds its SSE frame once framed, so the memory a full queue pins
# is about twice this.
DEFAULT_QUEUE_BYTES = 16 * 1024 * 1024
# Queued events given to a resumed connection per write.
FLUSH_BYTES = 64 * 1024


class SubscriptionClosed(Exception):
    pass


class Sink(Protocol):
    """What a subscription hands events to directly (a stream on its own connection)."""

    # True while the connection's write buffer is above its high-water mark.
    write_paused: bool

    def deliver(self, event: Event) -> bool:
        """Take the event's frame, to be written by ``send_pending`` (it may end the
        stream); True if it holds nothing else yet."""
        ...

    def send_pending(self) -> None:
        """Write what ``deliver`` took, in one write."""

    def buffered(self) -> int:
        """Bytes written and not yet taken by the client."""
        ...

    def subscription_closed(self) -> None:
        """The subscription was closed (shutdown, overflow): end the stream."""


class Subscription:
    __slots__ = (
        "_events",
        "_queued_bytes",
        "_waiter",
        "_writing_bytes",
        "closed",
        "max_bytes",
        "maxsize",
        "overflowed",
        "query",
        "sink",
    )

    def __init__(
        self, query: EventQuery, maxsize: int, max_bytes: int = DEFAULT_QUEUE_BYTES
    ) -> None:
        self.query = query
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.closed = False
        self.overflowed = False
        # A list, not a deque: an empty deque allocates a 760-byte block up front, and
        # thousands of idle subscribers each hold one.
        self._events: list[Event] = []
        self._queued_bytes = 0
        self._writing_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self.sink: Sink | None = None

    def push(self, event: Event) -> bool:
        """Queue the event, or give it to the sink; True if the sink now has writes
        pending (its ``send_pending`` is due)."""
        if self.closed:
            return False
        sink = self.sink
        if sink is not None and not sink.write_paused and not self._events:
            return sink.deliver(event)
        size = len(event.data)
        held = self._queued_bytes + self._writing_bytes
        if sink is not None:
            held += sink.buffered()
        # One event larger than the whole budget still goes to a reader holding nothing.
        if len(self._events) >= self.maxsize or (held and held + size > self.max_bytes):
            self.overflowed = True
            self.close()
            return False
        self._events.append(event)
        self._queued_bytes += size
        self._wake()
        return False

    def close(self) -> None:
        self.closed = True
        self._wake()
        sink = self.sink
        if sink is not None:
            self.sink = None
            sink.subscription_closed()

    def attach(self, sink: Sink) -> None:
        """From now on, events go to ``sink`` (those queued first)."""
        self._writing_bytes = 0
        self.sink = sink
        self.flush()

    def flush(self) -> None:
        """Give queued events to the sink, for as long as its connection takes them."""
        events = self._events
        taken = 0
        sink = self.sink
        # Up to the high-water mark's worth at a time: the connection pauses in the write.
        while sink is not None and not sink.write_paused and taken < len(events):
            batch = 0
            while taken < len(events) and batch < FLUSH_BYTES:
                event = events[taken]
                taken += 1
                self._queued_bytes -= len(event.data)
                batch += len(event.data)
                sink.deliver(event)
            sink.send_pending()
            sink = self.sink
        del events[:taken]

    def nudge(self) -> None:
        """Wake the waiter with no event: ``wait`` returns False, as on a timeout."""
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def drain(self) -> list[Event]:
        """Every event queued so far, without waiting. Their bytes still count against
        ``max_bytes`` until ``written``."""
        events, self._events = self._events, []
        self._writing_bytes += self._queued_bytes
        self._queued_bytes = 0
        return events

    def written(self) -> None:
        """Everything drained so far has been handed to the client's connection."""
        self._writing_bytes = 0

    async def wait(self, within: float | None) -> bool:
        """Wait until an event is queued (True), or ``within`` seconds pass or a nudge comes
        (False). Raises SubscriptionClosed once closed and drained."""
        if self._events:
            return True
        if self.closed:
            raise SubscriptionClosed
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if within is None:
                await self._waiter
            else:
                async with asyncio.timeout(within):
                    await self._waiter
        except TimeoutError:
            return False
        finally:
            self._waiter = None
        if self._events:
            return True
        if self.closed:
            raise SubscriptionClosed
        return False


class Broker:
    def __init__(self, queue_size: int = 1000, queue_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        self._queue_size = queue_size
        self._queue_bytes = queue_bytes
        # Keyed by what a subscriber watches, so a publish touches only the interested.
        self._by_channel: dict[str, set[Subscription]] = {}
        self._by_task: dict[str, set[Subscription]] = {}
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return sum(map(len, self._by_channel.values())) + sum(map(len, self._by_task.values()))

    @contextlib.asynccontextmanager
    async def subscribe(
        self, query: EventQuery, maxsize: int | None = None, max_bytes: int | None = None
    ) -> AsyncIterator[Subscription]:
        subscription = self.open(query, maxsize, max_bytes)
        try:
            yield subscription
        finally:
            self.discard(subscription)

    def open(
        self, query: EventQuery, maxsize: int | None = None, max_bytes: int | None = None
    ) -> Subscription:
        """A subscription that lasts until ``discard``: for a stream that outlives the
        coroutine that opened it."""
        subscription = Subscription(
            query, maxsize or self._queue_size, max_bytes or self._queue_bytes
        )
        if self._closed:
            subscription.close()
        index, key = self._index(subscription.query)
        index.setdefault(key, set()).add(subscription)
        return subscription

    def discard(self, subscription: Subscription) -> None:
        """Close it and forget it (again is harmless)."""
        subscription.close()
        index, key = self._index(subscription.query)
        subscribers = index.get(key)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del index[key]

    def _index(self, query: EventQuery) -> tuple[dict[str, set[Subscription]], str]:
        if query.channel_id is not None:
            return self._by_channel, query.channel_id
        if query.task_id is not None:
            return self._by_task, query.task_id
        raise ValueError("a subscription watches one channel or one task")

    def publish(self, events: Sequence[Event]) -> None:
        # Streams that write their own connection take every frame of the batch first, then
        # write them in one go: one write per subscriber per publish, not per event.
        pending: list[Sink] = []
        for event in events:
            for index, key in (
                (self._by_channel, event.channel_id),
                (self._by_task, event.task_id),
            ):
                if key is None:
                    continue
                subscribers = index.get(key)
                if not subscribers:
                    continue
                # A copy: a push may close a subscriber, whose cleanup edits the set.
                for subscription in tuple(subscribers):
                    if subscription.query.matches(event) and subscription.push(event):
                        pending.append(subscription.sink)  # type: ignore[arg-type]
        for sink in pending:
            sink.send_pending()

    def close(self) -> None:
        """End every stream now and refuse new ones: the server is shutting down."""
        self._closed = True
        for index in (self._by_channel, self._by_task):
            # Copies: closing a stream that writes its own connection forgets it at once.
            for subscribers in list(index.values()):
                for subscription in list(subscribers):
                    subscription.close()
