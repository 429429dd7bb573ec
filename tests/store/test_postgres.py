"""The PostgreSQL store: the same contract as SQLite's, and what replicas add to it: ids in
commit order under concurrent writers, every replica hearing every event (even across a
lost listener connection), migrations run once, claims that never overlap."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from hub.enums import TaskStatus
from hub.inbox.shapes import DELIVERY_IDS
from hub.store.base import Blob, Channel, Delivery, Event, EventQuery, NewEvent, TaskRecord
from hub.store.postgres import _EMIT, PostgresStore
from hub.store.postgres_schema import MIGRATIONS
from tests.helpers import until


class Replica:
    """A store as one replica holds it, with everything its feed published."""

    def __init__(self, url: str) -> None:
        self.published: list[Event] = []
        self.store = PostgresStore(url, self.published.extend)

    @property
    def ids(self) -> list[int]:
        return [event.id for event in self.published]


@contextlib.asynccontextmanager
async def replicas(url: str, count: int) -> AsyncIterator[list[Replica]]:
    opened = [Replica(url) for _ in range(count)]
    await asyncio.gather(*(r.store.open() for r in opened))
    try:
        yield opened
    finally:
        await asyncio.gather(*(r.store.close() for r in opened))


@pytest.fixture
async def pair(pg_url: str) -> AsyncIterator[list[Replica]]:
    async with replicas(pg_url, 2) as opened:
        await opened[0].store.create_channel(channel("ch"))
        yield opened


def channel(channel_id: str) -> Channel:
    return Channel(channel_id, "owner", None, time.time(), int(time.time()) + 3600)


def delivery(i: int, token: bytes = b"token", channel_id: str = "ch") -> Delivery:
    body = b'{"i": %d}' % i
    return Delivery(
        channel_id=channel_id,
        token_hash=hashlib.sha256(token).digest(),
        body_sha256=hashlib.sha256(body).digest(),
        content_type="application/json",
        headers=b"[]",
        body=body,
        received_at=time.time(),
        task_id=None,
        ref=None,
        event_data=b'{"i": %d}' % i,
        public_id=DELIVERY_IDS.new(),
        dedupe_key=hashlib.sha256(body).digest(),
        dedupe_until=time.time() + 86400,
    )


def task(task_id: str, next_at: float | None = 0.0) -> TaskRecord:
    now = time.time()
    return TaskRecord(
        id=task_id, owner="owner", provider="acedata", status=TaskStatus.QUEUED, input=b"{}",
        channel_id=None, provider_task_id=None, callback_secret="s", outputs=b"[]",
        result=None, error=None, attempts=0, next_at=next_at, deadline=now + 600,
        created_at=now, updated_at=now,
    )  # fmt: skip


async def test_a_delivery_is_published_on_every_replica(pair):
    a, b = pair
    event = await a.store.add_delivery(delivery(1))
    assert event is not None and event.id == 1
    await until(lambda: b.ids == [1], timeout=5)
    assert a.ids == [1] and b.published[0].data == b'{"i": 1}'
    assert b.published[0].channel_id == "ch"


async def test_same_key_on_same_channel_is_stored_once_across_replicas(pair):
    a, b = pair
    first = await a.store.add_delivery(delivery(7))
    assert first is not None
    assert await b.store.add_delivery(delivery(7)) is None
    both = await asyncio.gather(*(r.store.add_delivery(delivery(8)) for r in pair))
    assert sum(event is not None for event in both) == 1
    assert await a.store.add_delivery(delivery(7, token=b"other")) is None
    assert await a.store.add_delivery(delivery(7, channel_id="other")) is not None


async def test_concurrent_writers_on_two_replicas_never_publish_an_id_out_of_order(pair):
    """The ordering rule under load: 16 writers on each replica, callbacks and task events
    interleaved. Each replica publishes every id exactly once, in strictly increasing order,
    with no gap: so no subscriber anywhere can be handed an id lower than one it has."""
    a, b = pair
    per_writer = 40

    async def writer(replica: Replica, number: int) -> None:
        for i in range(per_writer):
            key = number * 1000 + i
            if i % 5 == 0:
                await replica.store.create_task(
                    task(f"t{key}", next_at=None), NewEvent("task.queued", b"{}", "ch", f"t{key}")
                )
            else:
                assert await replica.store.add_delivery(delivery(key)) is not None

    await asyncio.gather(*(writer(r, n) for n, r in enumerate([a, b] * 16)))
    total = 32 * per_writer
    await until(lambda: len(a.published) == total and len(b.published) == total, timeout=30)
    expected = list(range(1, total + 1))
    assert a.ids == expected
    assert b.ids == expected
    stored = await a.store.events_after(EventQuery(channel_id="ch"), 0, total + 10)
    assert [event.id for event in stored] == expected
    # Group commit: callbacks shared transactions.
    assert a.store.commits + b.store.commits < total


async def test_a_later_id_waits_for_the_earlier_one_to_commit(pair, pg_url):
    """The hazard a sequence alone would have: a transaction takes id N and is slow to
    commit while another takes N+1. With the counter, the second cannot even take its id
    until the first commits, so it can never become visible first."""
    a, b = pair
    slow = await asyncpg.connect(pg_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        await slow.fetchval(_EMIT, 1, ["slow"], ["ch"], [None], [None], [None], [b"{}"], [0.0])
        fast = asyncio.create_task(b.store.add_delivery(delivery(1)))

        async def fast_is_waiting_for_the_lock() -> bool:
            waiting = await slow.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            return bool(waiting)

        await until(fast_is_waiting_for_the_lock, timeout=10, every=0.02)
        assert not fast.done()
        await transaction.commit()
        event = await asyncio.wait_for(fast, 10)
        assert event is not None and event.id == 2
        await until(lambda: a.ids == [1, 2] and b.ids == [1, 2], timeout=5)
        assert [e.type for e in a.published] == ["slow", "callback.received"]
    finally:
        await slow.close()


async def test_a_lost_listener_connection_is_reopened_and_nothing_is_missed(pair, pg_url):
    a, b = pair
    await a.store.add_delivery(delivery(0))
    await until(lambda: b.ids == [1], timeout=5)
    admin = await asyncpg.connect(pg_url)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", b.store.feed.listener_pid)
        # Written while b has no listener: b must catch up from the store on reconnect.
        for i in range(1, 50):
            await a.store.add_delivery(delivery(i))
        await until(lambda: b.store.feed.reconnects >= 1, timeout=10)
        await until(lambda: len(b.published) == 50, timeout=10)
        assert b.ids == list(range(1, 51))
        # And it listens again: a new event arrives without another reconnect.
        await a.store.add_delivery(delivery(99))
        await until(lambda: b.ids[-1] == 51, timeout=5)
    finally:
        await admin.close()


async def test_replicas_starting_at_once_migrate_the_schema_once(pg_url):
    async with replicas(pg_url, 4):
        pass
    connection = await asyncpg.connect(pg_url)
    try:
        versions = await connection.fetch("SELECT version FROM hub_schema ORDER BY version")
        assert [row["version"] for row in versions] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        await connection.close()
    async with replicas(pg_url, 1) as (again,):
        await again.store.ping()


async def test_two_replicas_claiming_at_once_never_take_the_same_task(pair):
    a, b = pair
    for i in range(40):
        await a.store.create_task(task(f"t{i}"), NewEvent("task.queued", b"{}", task_id=f"t{i}"))
    now = time.time()
    claimed: list[str] = []

    async def claim(replica: Replica) -> None:
        while True:
            got = await replica.store.claim_tasks(now, 60.0, 3)
            if not got:
                return
            claimed.extend(t.id for t in got)

    await asyncio.gather(claim(a), claim(b), claim(a), claim(b))
    assert sorted(claimed) == sorted(f"t{i}" for i in range(40))
    # Leased: nobody gets them again until the lease runs out, then anybody does.
    assert await b.store.claim_tasks(now + 59, 60.0, 100) == []
    assert len(await b.store.claim_tasks(now + 61, 60.0, 100)) == 40
    # next_due reports the lease's end, not the due time the lease hides.
    due = await a.store.next_due()
    assert due is not None and due > now + 61
    # A replica that stops hands back what it was working on, and only that.
    await a.store.release_leases(["t1", "t2"])
    await a.store.release_leases()  # without ids: other replicas' leases stay
    assert sorted(t.id for t in await b.store.claim_tasks(now + 62, 60.0, 100)) == ["t1", "t2"]


async def test_task_transitions_happen_once_and_a_retried_callback_changes_nothing(pair):
    a, b = pair
    await a.store.create_task(task("t1"), NewEvent("task.queued", b"{}", task_id="t1"))
    # A task's callback, as the intake makes one: once per URL and bytes, no public id.
    callback = dataclasses.replace(delivery(1), task_id="t1", public_id=None, dedupe_key=None)
    submitted = NewEvent("task.submitted", b"{}", task_id="t1")
    results = await asyncio.gather(
        a.store.update_task("t1", frozenset({"queued"}), {"status": "submitted"}, [submitted]),
        b.store.update_task("t1", frozenset({"queued"}), {"status": "submitted"}, [submitted]),
    )
    assert sorted(r is None for r in results) == [False, True]
    blob = Blob("b1", "owner", "image/png", 3, hashlib.sha256(b"png").digest(), time.time(), b"png")
    done = NewEvent("task.succeeded", b"{}", task_id="t1")
    changes = {"status": "succeeded", "next_at": None, "outputs": b'[{"blob_id": "b1"}]'}
    applied = await a.store.update_task(
        "t1", frozenset({"submitted"}), changes, [done], [blob], delivery=callback
    )
    assert applied is not None and [e.type for e in applied] == ["task.succeeded"]
    # The provider retries the same callback: already stored, so nothing happens.
    retried = await b.store.update_task(
        "t1", frozenset({"succeeded"}), {"error": "x"}, [done], delivery=callback
    )
    assert retried is None
    record = await b.store.get_task("t1")
    assert record is not None and record.status == "succeeded" and record.error is None
    assert record.outputs == b'[{"blob_id": "b1"}]' and record.next_at is None
    assert await b.store.get_blob("b1") == blob
    with pytest.raises(ValueError, match="cannot change"):
        await a.store.update_task("t1", frozenset({"queued"}), {"owner": "someone else"})


async def test_queries_filter_and_prune_records_how_far(pair):
    a, b = pair
    await a.store.create_channel(channel("other"))
    for i in range(6):
        await a.store.add_delivery(delivery(i, channel_id="ch" if i % 2 else "other"))
    await a.store.create_task(task("t1"), NewEvent("task.queued", b"{}", "ch", "t1", "ref-1"))
    query = EventQuery(channel_id="ch")
    assert [e.id for e in await b.store.events_after(query, 0, 10)] == [2, 4, 6, 7]
    assert [e.id for e in await b.store.events_after(query, 2, 2)] == [4, 6]
    by_ref = EventQuery(channel_id="ch", ref="ref-1", types=frozenset({"task.queued"}))
    assert [e.id for e in await b.store.events_after(by_ref, 0, 10)] == [7]
    latest = await b.store.latest_event(EventQuery(task_id="t1"))
    assert latest is not None and latest.id == 7
    assert await b.store.latest_event(EventQuery(channel_id="nobody")) is None
    assert await b.store.get_channel("ch") == await a.store.get_channel("ch")
    assert await b.store.get_channel("nobody") is None

    assert await a.store.prune(time.time() + 1) == 7
    assert await b.store.pruned_through(query) == 7
    assert await b.store.pruned_through(EventQuery(channel_id="other")) == 5
    assert await b.store.pruned_through(EventQuery(task_id="t1")) == 7
    assert await b.store.events_after(query, 0, 10) == []
    # Ids keep growing after pruning.
    event = await b.store.add_delivery(delivery(100))
    assert event is not None and event.id == 8


async def test_a_closed_store_refuses_writes_and_a_bad_url_fails_to_open(pg_url):
    async with replicas(pg_url, 1) as (replica,):
        store = replica.store
    with pytest.raises(RuntimeError, match="closed"):
        await store.add_delivery(delivery(1))
    with pytest.raises(RuntimeError, match="closed"):
        await store.get_task("t")
    broken = PostgresStore(pg_url.rsplit("/", 1)[0] + "/no_such_database", lambda events: None)
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await broken.open()
