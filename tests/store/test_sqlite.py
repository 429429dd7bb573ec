import asyncio
import hashlib
import sqlite3
import time

import pytest

from hub.inbox.shapes import DELIVERY_IDS
from hub.store.base import Channel, Delivery, Event, EventQuery
from hub.store.sqlite import SQLiteStore
from hub.store.sqlite_schema import MIGRATIONS
from hub.store.sqlite_writer import MAX_BATCH, MAX_UNSYNCED


def delivery(
    body: bytes,
    token: bytes = b"t1",
    channel: str = "ch_a",
    at: float | None = None,
    ref: str | None = None,
) -> Delivery:
    return Delivery(
        channel_id=channel,
        token_hash=hashlib.sha256(token).digest(),
        body_sha256=hashlib.sha256(body).digest(),
        content_type="application/json",
        headers=b"[]",
        body=body,
        received_at=time.time() if at is None else at,
        task_id=None,
        ref=ref,
        event_data=b'{"n":1}',
        public_id=DELIVERY_IDS.new(),
        # As the intake keys a channel delivery without a sender's id: its bytes (and an
        # empty query), within a day.
        dedupe_key=hashlib.sha256(body).digest(),
        dedupe_until=(time.time() if at is None else at) + 86400,
    )


@pytest.fixture
async def store(tmp_path):
    published: list[Event] = []
    s = SQLiteStore(tmp_path / "hub.db", published.extend, synchronous="NORMAL")
    s.published = published  # type: ignore[attr-defined]
    await s.open()
    yield s
    await s.close()


async def test_delivery_becomes_an_event_published_after_commit(store):
    event = await store.add_delivery(delivery(b"one", ref="r1"))
    assert event is not None and event.id == 1 and event.ref == "r1"
    assert [e.id for e in store.published] == [1]
    stored = await store.events_after(EventQuery(channel_id="ch_a"), 0, 10)
    assert [(e.id, e.type, e.data) for e in stored] == [(1, "callback.received", b'{"n":1}')]


async def test_same_key_on_same_channel_is_stored_once(store):
    assert await store.add_delivery(delivery(b"same")) is not None
    assert await store.add_delivery(delivery(b"same")) is None
    # The same on another URL of the channel too; on another channel it is another.
    assert await store.add_delivery(delivery(b"same", token=b"t2")) is None
    assert await store.add_delivery(delivery(b"same", channel="ch_b")) is not None
    # Once its window has passed, the same key is a new delivery.
    later = time.time() + 2 * 86400
    assert await store.add_delivery(delivery(b"same", at=later)) is not None
    assert len(store.published) == 3


async def test_concurrent_deliveries_share_commits_and_keep_id_order(store):
    results = await asyncio.gather(*(store.add_delivery(delivery(b"%d" % i)) for i in range(200)))
    ids = [e.id for e in results if e is not None]
    assert sorted(ids) == list(range(1, 201))
    assert [e.id for e in store.published] == list(range(1, 201))
    assert store.commits < 200  # group commit: many deliveries per transaction


async def test_duplicates_inside_one_batch_are_caught(store):
    results = await asyncio.gather(*(store.add_delivery(delivery(b"dup")) for _ in range(20)))
    assert sum(r is not None for r in results) == 1


async def test_ids_keep_growing_across_restart_and_pruning(tmp_path):
    path = tmp_path / "hub.db"
    first = SQLiteStore(path, lambda events: None, synchronous="NORMAL")
    await first.open()
    await first.create_channel(Channel("ch_a", "owner", None, time.time(), 2**31))
    old = time.time() - 1000
    for i in range(3):
        await first.add_delivery(delivery(b"%d" % i, at=old))
    assert await first.prune(time.time() - 10) == 3
    await first.close()

    second = SQLiteStore(path, lambda events: None, synchronous="NORMAL")
    await second.open()
    try:
        event = await second.add_delivery(delivery(b"new"))
        assert event is not None and event.id == 4  # never reuses a pruned id
        assert await second.pruned_through(EventQuery(channel_id="ch_a")) == 3
        assert await second.pruned_through(EventQuery(task_id="task_x")) == 3
    finally:
        await second.close()


async def test_prune_records_how_far_each_channel_was_pruned(store):
    await store.create_channel(Channel("ch_a", "owner", None, time.time(), 2**31))
    await store.create_channel(Channel("ch_b", "owner", None, time.time(), 2**31))
    old = time.time() - 1000
    await store.add_delivery(delivery(b"a1", channel="ch_a", at=old))
    await store.add_delivery(delivery(b"b1", channel="ch_b", at=old))
    await store.add_delivery(delivery(b"a2", channel="ch_a"))
    assert await store.prune(time.time() - 10) == 2
    assert await store.pruned_through(EventQuery(channel_id="ch_a")) == 1
    assert await store.pruned_through(EventQuery(channel_id="ch_b")) == 2
    remaining = await store.events_after(EventQuery(channel_id="ch_a"), 0, 10)
    assert [e.id for e in remaining] == [3]
    # A retention-deleted delivery's bytes are gone too.
    assert await store.add_delivery(delivery(b"a1", channel="ch_a")) is not None


async def test_queries_filter_by_ref_and_type_and_page(store):
    for i in range(5):
        await store.add_delivery(delivery(b"%d" % i, ref="even" if i % 2 == 0 else "odd"))
    q = EventQuery(channel_id="ch_a", ref="even", types=frozenset({"callback.received"}))
    assert [e.id for e in await store.events_after(q, 0, 10)] == [1, 3, 5]
    assert [e.id for e in await store.events_after(q, 1, 1)] == [3]
    latest = await store.latest_event(q)
    assert latest is not None and latest.id == 5
    assert await store.latest_event(EventQuery(channel_id="ch_a", ref="none")) is None
    none = EventQuery(channel_id="ch_a", types=frozenset({"task.failed"}))
    assert await store.events_after(none, 0, 10) == []


async def test_migrations_are_versioned_and_run_once(tmp_path):
    path = tmp_path / "hub.db"
    for _ in range(2):
        s = SQLiteStore(path, lambda events: None)
        await s.open()
        await s.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_failing_write_fails_alone(store):
    channel = Channel("ch_x", "owner", None, time.time(), 2**31)
    await store.create_channel(channel)
    results = await asyncio.gather(
        store.create_channel(channel),  # primary key clash
        store.add_delivery(delivery(b"fine")),
        return_exceptions=True,
    )
    assert isinstance(results[0], sqlite3.IntegrityError)
    assert isinstance(results[1], Event)


async def test_closed_store_refuses_writes(tmp_path):
    s = SQLiteStore(tmp_path / "hub.db", lambda events: None)
    await s.open()
    await s.close()
    with pytest.raises(RuntimeError):
        await s.add_delivery(delivery(b"late"))
    with pytest.raises(RuntimeError):
        await s.ping()


async def test_with_deferred_fsync_ids_skip_ahead_only_after_an_unclean_stop(tmp_path):
    path = tmp_path / "hub.db"

    async def first_id(body: bytes) -> int:
        store = SQLiteStore(path, lambda events: None, synchronous="FULL")
        await store.open()
        try:
            event = await store.add_delivery(delivery(body))
            assert event is not None
            return event.id
        finally:
            await store.close()

    assert await first_id(b"a") == 1  # a fresh database starts at 1
    assert await first_id(b"b") == 2  # after a clean stop, ids go on
    # A run that never stopped cleanly (killed, or the power went): its last events may
    # have been seen and lost, so the next ids skip past all it could have published.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 1 WHERE key = 'running'")
    assert await first_id(b"c") == 2 + MAX_UNSYNCED * MAX_BATCH + 1


async def test_without_deferred_fsync_ids_continue_where_they_stopped(tmp_path):
    path = tmp_path / "hub.db"
    for expected in (1, 2):
        store = SQLiteStore(path, lambda events: None, synchronous="NORMAL")
        await store.open()
        try:
            event = await store.add_delivery(delivery(b"%d" % expected))
            assert event is not None and event.id == expected
        finally:
            await store.close()


async def test_answers_wait_for_the_fsync_but_subscribers_do_not(tmp_path, monkeypatch):
    """FULL: events are published once committed to the WAL; callers are answered only
    after the WAL is fsynced."""
    import os
    import threading

    release = threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd):
        release.wait(10)
        real_fsync(fd)

    published: list[Event] = []
    store = SQLiteStore(tmp_path / "hub.db", published.extend, synchronous="FULL")
    await store.open()
    try:
        monkeypatch.setattr(os, "fsync", slow_fsync)
        pending = asyncio.ensure_future(store.add_delivery(delivery(b"durable")))
        from tests.helpers import until

        await until(lambda: len(published) == 1)
        assert not pending.done()  # published, not yet answered
        release.set()
        event = await asyncio.wait_for(pending, 10)
        assert event is not None and event.id == published[0].id
    finally:
        release.set()
        await store.close()
