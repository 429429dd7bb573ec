"""Group commit for SQLite: one task owns the write connection and commits whatever writes
are waiting in one transaction, so under load many writes share one fsync.

The write connection lives on a thread of its own, and a whole batch (begin, inserts,
commit) runs there in one call: one hop between the event loop and that thread per batch,
where a call per statement cost six, each waiting its turn on a busy loop.

The writer assigns event and delivery ids itself, in commit order, and hands each
committed batch's events to ``on_commit`` in id order before any caller is answered, so
subscribers see events in id order. That needs the writer to be the only one, which is
why SQLite mode is one process (replicas use PostgreSQL).

Durability without making subscribers wait for the disk: with a ``sync`` function the
transaction is committed to the WAL (safe from a process crash at once), its events are
published, and only then is the WAL fsynced, once for every batch committed meanwhile,
before any caller is answered. Should the machine lose power in that window, events that
subscribers saw could be lost; so that no id they saw is ever handed out again, ids skip
ahead by more than the window can hold when the last run did not stop cleanly (a durable
mark says so: set at start, cleared by a clean stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hub.enums import EventType
from hub.store.base import Delivery, Event, NewEvent, StoreUnavailable
from hub.store.columns import DELIVERY_COLUMNS
from hub.store.faults import sqlite_fsync_failed, sqlite_transient

log = logging.getLogger("hub.store")

MAX_BATCH = 512
# Batches committed but not yet fsynced, at most: bounds the ids a power loss can undo.
MAX_UNSYNCED = 4

T = TypeVar("T")


class Tx:
    """What a write op may ask of the transaction it runs in: ids, and events to publish."""

    __slots__ = ("_events", "_ids", "_pending")

    def __init__(self, ids: _Ids, pending: _Pending, events: list[Event]) -> None:
        self._ids = ids
        self._pending = pending
        self._events = events

    def emit(self, new: NewEvent) -> Event:
        event = self._ids.event(new)
        self._pending.events.append(event)
        self._events.append(event)
        return event

    def delivery_id(self) -> int:
        return self._ids.delivery()

    @property
    def last_event_id(self) -> int:
        """The newest event id handed out, this transaction's included."""
        return self._ids.next_event - 1


# A write: a plain function run on the writer's thread, inside the batch's transaction.
Op = Callable[[sqlite3.Connection, Tx], Any]


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    delivery: Delivery | None = None
    op: Op | None = None
    events: list[Event] = field(default_factory=list)


class Writer:
    def __init__(
        self,
        path: Path,
        synchronous: str,
        on_commit: Callable[[Sequence[Event]], None],
        sync: Callable[[], None] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hub-sqlite-writer")
        self._db: sqlite3.Connection | None = None
        self._on_commit = on_commit
        self._sync = sync
        self._on_fatal = on_fatal
        # Set when an fsync failed: nothing committed since can be trusted to be on disk
        # (the kernel may have dropped the pages), so the writer takes nothing more.
        self._failed: BaseException | None = None
        self._unsynced: list[tuple[list[_Pending], list[Any]]] = []
        self._sync_wanted = asyncio.Event()
        self._synced = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._next_event_id = 1
        self._next_delivery_id = 1
        # Transactions committed so far: with group commit, fewer than writes.
        self.commits = 0

    async def start(self, migrate: Callable[[sqlite3.Connection], None]) -> None:
        """Connect, run ``migrate``, and start taking writes."""
        db = self._db = await self._call(self._connect)
        await self._call(migrate, db)
        # AUTOINCREMENT's sqlite_sequence remembers the highest id ever used, even after
        # retention deleted it, so an id is never handed out twice.
        self._next_event_id = await self._call(_sequence, db, "events") + 1
        if self._sync is not None:
            if await self._call(_mark_running, db, 1):
                self._next_event_id += MAX_UNSYNCED * MAX_BATCH
            await asyncio.to_thread(self._sync)  # the mark is durable before any publish
            self._sync_task = asyncio.create_task(self._sync_loop(), name="hub-sqlite-sync")
        self._next_delivery_id = await self._call(_sequence, db, "deliveries") + 1
        self._task = asyncio.create_task(self._loop(), name="hub-sqlite-writer")

    def _connect(self) -> sqlite3.Connection:
        # Used on the writer's thread only; created there too.
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self._synchronous}")
        db.execute("PRAGMA busy_timeout=5000")
        # SQLite's default checkpoint (every 1,000 pages) stays: at 10,000 pages the log
        # grew to 40 MB between checkpoints, and a hub whose disk had filled did not
        # recover once space came back (tests/behaviour/test_store_faults.py).
        return db

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def stop(self) -> None:
        for task in (self._task, self._sync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._sync_task = None
        if self._unsynced:
            # Committed already: make them durable and answer them, as a clean stop should.
            ready, self._unsynced = self._unsynced, []
            assert self._sync is not None
            try:
                await asyncio.to_thread(self._sync)
            except Exception as exc:
                _fail(ready, exc)
            else:
                for batch, results in ready:
                    _answer(batch, results)
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the store is closed"))
        if self._db is not None and self._sync is not None and self._failed is None:
            # Everything published is durable now: the next start need not skip ids.
            await self._call(_mark_running, self._db, 0)
            await asyncio.to_thread(self._sync)
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def delivery(self, delivery: Delivery) -> Event | None:
        result: Event | None = await self._submit(delivery=delivery)
        return result

    async def run(self, op: Op) -> Any:
        """Run ``op`` inside the next shared transaction; its result once committed."""
        return await self._submit(op=op)

    async def _submit(self, *, delivery: Delivery | None = None, op: Op | None = None) -> Any:
        if self._failed is not None:
            raise _stopped()
        if self._task is None or self._task.done():
            raise RuntimeError("the store is closed")
        pending = _Pending(asyncio.get_running_loop().create_future(), delivery, op)
        self._queue.put_nowait(pending)
        return await pending.future

    async def _loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(self._unsynced) >= MAX_UNSYNCED:
                self._synced.clear()
                await self._synced.wait()
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._commit(batch)
            except Exception as exc:
                if sqlite_fsync_failed(exc):
                    self._stop_for(exc, [(batch, [])])
                    return
                if sqlite_transient(exc):
                    # The disk is full, or failing: no write would do better alone. Nothing
                    # committed, so the store stays sound; each caller hears 503.
                    log.warning("batch of %d writes failed: %s", len(batch), exc)
                    for pending in batch:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                    continue
                # One bad write must not fail the others that shared its transaction:
                # retry each alone so only the guilty one sees its error.
                log.exception("batch of %d writes failed; retrying one by one", len(batch))
                for pending in batch:
                    try:
                        result = await self._commit([pending])
                    except Exception as exc:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                    else:
                        self._finish([pending], result)
                continue
            self._finish(batch, results)

    def _finish(self, batch: list[_Pending], results: list[Any]) -> None:
        events = [event for pending in batch for event in pending.events]
        if events:
            events.sort(key=lambda event: event.id)
            try:
                self._on_commit(events)
            except Exception:
                log.exception("publishing committed events failed")
        if self._sync is not None:
            self._unsynced.append((batch, results))
            self._sync_wanted.set()
        else:
            _answer(batch, results)

    async def _sync_loop(self) -> None:
        assert self._sync is not None
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            ready, self._unsynced = self._unsynced, []
            try:
                # One fsync makes every batch committed so far durable.
                await asyncio.to_thread(self._sync)
            except Exception as exc:
                self._stop_for(exc, ready)
                return
            for batch, results in ready:
                _answer(batch, results)
            self._synced.set()

    def _stop_for(self, exc: BaseException, ready: list[tuple[list[_Pending], list[Any]]]) -> None:
        """An fsync failed: what it covered may not be on disk, and a retry of fsync can
        report success for pages the kernel already dropped. Answer nothing more (not
        those writes, not later ones) and tell the owner, who stops the process; a
        restart reads the database from what the disk holds."""
        log.critical("fsync of the write-ahead log failed; the store stops", exc_info=exc)
        self._failed = exc
        _fail(ready, _stopped())
        _fail(self._unsynced, _stopped())
        self._unsynced = []
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(_stopped())
        if self._task is not None:
            self._task.cancel()
        self._synced.set()
        if self._on_fatal is not None:
            self._on_fatal(exc)

    async def _commit(self, batch: list[_Pending]) -> list[Any]:
        ids = _Ids(self._next_event_id, self._next_delivery_id)
        try:
            results = await self._call(self._commit_in_thread, batch, ids)
        except BaseException:
            for pending in batch:
                pending.events.clear()
            raise
        self.commits += 1
        self._next_event_id, self._next_delivery_id = ids.next_event, ids.next_delivery
        return results

    def _commit_in_thread(self, batch: list[_Pending], ids: _Ids) -> list[Any]:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            results: list[Any] = [None] * len(batch)
            deliveries = [(i, p) for i, p in enumerate(batch) if p.delivery is not None]
            if deliveries:
                _insert_deliveries(db, deliveries, results, ids)
            op_events: list[Event] = []
            for i, pending in enumerate(batch):
                if pending.op is not None:
                    results[i] = pending.op(db, Tx(ids, pending, op_events))
            _insert_events(db, [(event, None, None) for event in op_events])
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                db.execute("ROLLBACK")
            raise
        return results


def _stopped() -> StoreUnavailable:
    return StoreUnavailable("store_unavailable", "the store stopped after a failed fsync")


def _answer(batch: list[_Pending], results: list[Any]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(result)


def _fail(ready: list[tuple[list[_Pending], list[Any]]], exc: BaseException) -> None:
    for batch, _ in ready:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)


class _Ids:
    """Ids handed out inside one transaction; kept only if it commits."""

    __slots__ = ("next_delivery", "next_event")

    def __init__(self, next_event: int, next_delivery: int) -> None:
        self.next_event = next_event
        self.next_delivery = next_delivery

    def event(self, new: NewEvent, created_at: float | None = None) -> Event:
        event = Event(
            self.next_event, new.type, new.data,
            channel_id=new.channel_id, task_id=new.task_id, ref=new.ref, created_at=created_at,
        )  # fmt: skip
        self.next_event += 1
        return event

    def delivery(self) -> int:
        self.next_delivery += 1
        return self.next_delivery - 1


def _insert_deliveries(
    db: sqlite3.Connection,
    deliveries: list[tuple[int, _Pending]],
    results: list[Any],
    ids: _Ids,
) -> None:
    # Windowed dedupe first, in arrival order (so a twin later in the batch is the
    # duplicate): a key is taken if it is new or the one it meets has lapsed.
    fresh = []
    for i, pending in deliveries:
        d = pending.delivery
        assert d is not None
        if d.dedupe_key is not None:
            taken = db.execute(CLAIM_KEY, (d.channel_id, d.dedupe_key, d.received_at,
                                           d.dedupe_until)).rowcount  # fmt: skip
            if taken != 1:
                continue  # a duplicate: result stays None
        fresh.append((i, pending))
    deliveries = fresh
    first = ids.next_delivery
    rows = []
    for _, pending in deliveries:
        d = pending.delivery
        assert d is not None
        rows.append((ids.delivery(), *delivery_row(d)))
    # A retry of bytes already accepted on the same URL is ignored by the unique index;
    # which ids made it in tells the duplicates apart without a query per delivery.
    db.executemany(INSERT_DELIVERY, rows)
    cursor = db.execute(
        "SELECT id FROM deliveries WHERE id >= ? AND id < ?", (first, ids.next_delivery)
    )
    stored = {int(row[0]) for row in cursor.fetchall()}
    event_rows: list[tuple[Event, int | None, Delivery | None]] = []
    for offset, (i, pending) in enumerate(deliveries):
        d = pending.delivery
        assert d is not None
        delivery_id = first + offset
        if delivery_id not in stored:
            continue  # a duplicate: result stays None
        if d.event_data is None:
            results[i] = True  # kept, but publishes nothing of its own
            continue
        event = ids.event(
            NewEvent(EventType.CALLBACK_RECEIVED, d.event_data, d.channel_id, d.task_id, d.ref),
            created_at=d.received_at,
        )
        event_rows.append((event, delivery_id, d))
        pending.events.append(event)
        results[i] = event
    _insert_events(db, event_rows)


# Every column of a delivery, its id first (the writer hands ids out itself).
INSERT_DELIVERY = (
    f"INSERT OR IGNORE INTO deliveries (id, {DELIVERY_COLUMNS})"  # noqa: S608
    f" VALUES ({', '.join('?' * (DELIVERY_COLUMNS.count(',') + 2))})"
)


# Take a channel's dedupe key: one row changed if it was free (new, or lapsed).
CLAIM_KEY = (
    "INSERT INTO delivery_keys (channel_id, key, at, until) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (channel_id, key) DO UPDATE SET at = excluded.at, until = excluded.until"
    " WHERE delivery_keys.until <= excluded.at"
)


def delivery_row(d: Delivery) -> tuple[Any, ...]:
    """The values of DELIVERY_COLUMNS, in order."""
    return (
        d.channel_id, d.token_hash, d.body_sha256, d.received_at, d.content_type, d.headers,
        d.body, d.task_id, d.ref, d.public_id, d.query, d.verified, d.url_id,
    )  # fmt: skip


def _insert_events(
    db: sqlite3.Connection, rows: Sequence[tuple[Event, int | None, Delivery | None]]
) -> None:
    if rows:
        db.executemany(INSERT_EVENT, [event_row(e, delivery_id, d) for e, delivery_id, d in rows])


INSERT_EVENT = (
    "INSERT INTO events (id, type, channel_id, task_id, ref, delivery_id, data, created_at,"
    " body_at, body_form) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def event_row(e: Event, delivery_id: int | None, d: Delivery | None) -> tuple[Any, ...]:
    """An event's row; a callback's body is kept once, in its delivery, where it can be."""
    if d is not None and d.event_stub is not None:
        return (e.id, e.type, e.channel_id, e.task_id, e.ref, delivery_id, d.event_stub,
                e.created_at, d.event_body_at, d.event_body_form)  # fmt: skip
    return (e.id, e.type, e.channel_id, e.task_id, e.ref, delivery_id, e.data, e.created_at,
            None, None)  # fmt: skip


def _sequence(db: sqlite3.Connection, table: str) -> int:
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
    return int(row[0]) if row else 0


def _mark_running(db: sqlite3.Connection, running: int) -> bool:
    """Set the 'running' mark; True if it was set before (the last run did not stop)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'running'").fetchone()
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('running', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (running,),
    )
    return bool(row and row[0])
