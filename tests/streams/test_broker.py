import asyncio
from collections.abc import Callable

import pytest

from hub.store.base import Event, EventQuery
from hub.streams.broker import Broker, SubscriptionClosed


def event(id: int, channel: str = "ch_a", type: str = "callback.received", **kw) -> Event:
    return Event(id, type, b"{}", channel_id=channel, **kw)


async def test_publish_reaches_matching_subscribers_only():
    broker = Broker()
    async with (
        broker.subscribe(EventQuery(channel_id="ch_a")) as a,
        broker.subscribe(
            EventQuery(channel_id="ch_a", types=frozenset({"task.succeeded"}))
        ) as typed,
        broker.subscribe(EventQuery(channel_id="ch_a", ref="r1")) as by_ref,
        broker.subscribe(EventQuery(channel_id="ch_b")) as b,
        broker.subscribe(EventQuery(task_id="task_1")) as task,
    ):
        broker.publish([event(1, ref="r1"), event(2, task_id="task_1", type="task.succeeded")])
        assert [e.id for e in a.drain()] == [1, 2]
        assert [e.id for e in typed.drain()] == [2]
        assert [e.id for e in by_ref.drain()] == [1]
        assert b.drain() == []
        assert [e.id for e in task.drain()] == [2]
    assert broker.subscriber_count == 0


async def test_a_full_queue_closes_that_subscriber_and_no_other():
    broker = Broker(queue_size=2)
    async with (
        broker.subscribe(EventQuery(channel_id="ch_a")) as slow,
        broker.subscribe(EventQuery(channel_id="ch_a"), maxsize=10) as fast,
    ):
        broker.publish([event(i) for i in range(1, 4)])
        assert slow.overflowed and slow.closed
        assert not fast.closed
        assert [e.id for e in fast.drain()] == [1, 2, 3]
        # What was queued before the overflow can still be drained, then it reports closed.
        assert await slow.wait(0) is True
        assert [e.id for e in slow.drain()] == [1, 2]
        with pytest.raises(SubscriptionClosed):
            await slow.wait(1)


async def test_wait_times_out_then_wakes_on_publish():
    broker = Broker()
    async with broker.subscribe(EventQuery(channel_id="ch_a")) as sub:
        assert await sub.wait(0.01) is False
        waiter = asyncio.create_task(sub.wait(5))
        await asyncio.sleep(0)
        broker.publish([event(1)])
        assert await waiter is True


async def test_close_ends_every_stream_and_refuses_new_ones():
    broker = Broker()
    async with broker.subscribe(EventQuery(channel_id="ch_a")) as sub:
        waiter = asyncio.create_task(sub.wait(5))
        await asyncio.sleep(0)
        broker.close()
        with pytest.raises(SubscriptionClosed):
            await waiter
    async with broker.subscribe(EventQuery(channel_id="ch_a")) as late:
        assert late.closed


async def test_a_subscription_must_name_a_channel_or_task():
    with pytest.raises(ValueError):
        async with Broker().subscribe(EventQuery()):
            pass


async def test_a_nudge_wakes_the_waiter_without_an_event():
    broker = Broker()
    async with broker.subscribe(EventQuery(channel_id="ch_a")) as sub:
        waiter = asyncio.create_task(sub.wait(None))
        await asyncio.sleep(0)
        sub.nudge()
        assert await waiter is False
        broker.publish([event(1)])
        assert await sub.wait(None) is True


class Sink:
    """A stream writing its own connection, as the broker sees one."""

    def __init__(self) -> None:
        self.write_paused = False
        self.taken: list[int] = []
        self.writes: list[list[int]] = []
        self.in_buffer = 0
        self.ended = False
        self.on_end: Callable[[], None] | None = None

    def deliver(self, event: Event) -> bool:
        self.taken.append(event.id)
        return len(self.taken) == 1

    def send_pending(self) -> None:
        self.writes.append(self.taken)
        self.taken = []

    def buffered(self) -> int:
        return self.in_buffer

    def subscription_closed(self) -> None:
        self.ended = True
        if self.on_end is not None:
            self.on_end()


def test_a_sink_gets_a_batch_in_one_write_and_queues_while_paused():
    broker = Broker(queue_size=3, queue_bytes=1000)
    subscription = broker.open(EventQuery(channel_id="ch_a"))
    sink = Sink()
    subscription.attach(sink)
    broker.publish([event(1), event(2), event(3, channel="ch_b")])
    assert sink.writes == [[1, 2]]  # one write per subscriber per publish
    sink.write_paused = True
    broker.publish([event(4)])
    broker.publish([event(5)])
    assert sink.writes == [[1, 2]] and [e.id for e in subscription._events] == [4, 5]
    sink.write_paused = False
    subscription.flush()  # the connection resumed
    assert sink.writes == [[1, 2], [4, 5]] and subscription._events == []
    # Paused again: the queue's bound counts what the connection holds unsent.
    sink.write_paused = True
    sink.in_buffer = 999
    broker.publish([event(6)])
    assert subscription.overflowed and sink.ended and subscription.sink is None
    broker.discard(subscription)
    assert broker.subscriber_count == 0


def test_closing_the_broker_ends_sinks_that_forget_themselves_at_once():
    broker = Broker()
    subscriptions = [broker.open(EventQuery(channel_id="ch_a")) for _ in range(3)]
    sinks = [Sink() for _ in subscriptions]
    for subscription, sink in zip(subscriptions, sinks, strict=True):
        subscription.attach(sink)
        # As a stream does when it ends: off the broker, during the broker's own loop.
        sink.on_end = lambda s=subscription: broker.discard(s)
    broker.close()
    assert broker.subscriber_count == 0 and all(sink.ended for sink in sinks)
