"""The default store: SQLite in WAL mode through aiosqlite.

Writes go through one writer task that commits whatever is waiting in one transaction
(group commit): under load many callbacks share one fsync. The writer assigns event and
delivery ids itself, in commit order, and hands each committed batch to ``on_commit`` in id
order before any caller is answered, so subscribers see events in id order. That needs the
writer to be the only one, which is why SQLite mode is one process (replicas use PostgreSQL).
Reads use a second connection, which WAL lets run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from hub.events import Event
from hub.store.base import Channel, Delivery, EventQuery
from hub.store.sqlite_schema import MIGRATIONS

log = logging.getLogger("hub.store")

MAX_BATCH = 512
_EVENT_COLUMNS = "id, type, channel_id, task_id, ref, data, created_at"

Op = Callable[[aiosqlite.Connection], Awaitable[Any]]


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Any]
    delivery: Delivery | None = None
    op: Op | None = None
    events: list[Event] = field(default_factory=list)


class SQLiteStore:
    def __init__(
        self,
        path: Path,
        on_commit: Callable[[Sequence[Event]], None],
        *,
        synchronous: str = "FULL",
    ) -> None:
        self._path = path
        self._on_commit = on_commit
        self._synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._next_event_id = 1
        self._next_delivery_id = 1
        # Transactions committed so far: with group commit, fewer than writes.
        self.commits = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._next_event_id = await self._sequence("events") + 1
        self._next_delivery_id = await self._sequence("deliveries") + 1
        self._reader = await self._connect()
        self._task = asyncio.create_task(self._write_loop(), name="hub-sqlite-writer")

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self._path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns, so an acknowledged callback survives a
        # power cut, not just a process crash. Group commit keeps the cost per batch.
        await db.execute(f"PRAGMA synchronous={self._synchronous}")
        await db.execute("PRAGMA busy_timeout=5000")
        return db

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump rides in the script's own
            # transaction so a crash mid-migration leaves the old version recorded.
            await db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
            log.info("store migrated to version %d", number)

    async def _sequence(self, table: str) -> int:
        assert self._writer is not None
        # AUTOINCREMENT's sqlite_sequence remembers the highest id ever used, even after
        # retention deleted it, so an id is never handed out twice.
        sql = "SELECT seq FROM sqlite_sequence WHERE name = ?"
        async with self._writer.execute(sql, (table,)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the store is closed"))
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._reader = self._writer = None

    async def ping(self) -> None:
        async with self._read("SELECT 1") as cursor:
            await cursor.fetchone()

    # -- writes ----------------------------------------------------------------------------

    async def create_channel(self, channel: Channel) -> None:
        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO channels (id, owner, label, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (channel.id, channel.owner, channel.label, channel.created_at, channel.expires_at),
            )

        await self._submit(_Pending(self._future(), op=op))

    async def add_delivery(self, delivery: Delivery) -> Event | None:
        result: Event | None = await self._submit(_Pending(self._future(), delivery=delivery))
        return result

    async def prune(self, before: float) -> int:
        async def op(db: aiosqlite.Connection) -> int:
            cutoff = (before,)
            await db.execute(
                "UPDATE channels SET pruned_through = MAX(pruned_through, ("
                " SELECT MAX(e.id) FROM events e"
                " WHERE e.channel_id = channels.id AND e.created_at < ?))"
                " WHERE id IN (SELECT channel_id FROM events WHERE created_at < ?)",
                (before, before),
            )
            await db.execute(
                "INSERT INTO meta (key, value) SELECT 'pruned_through', MAX(id) FROM events"
                " WHERE created_at < ? HAVING MAX(id) IS NOT NULL"
                " ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                cutoff,
            )
            cursor = await db.execute("DELETE FROM events WHERE created_at < ?", cutoff)
            deleted = cursor.rowcount
            await db.execute("DELETE FROM deliveries WHERE received_at < ?", cutoff)
            return deleted

        deleted: int = await self._submit(_Pending(self._future(), op=op))
        return deleted

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, pending: _Pending) -> Any:
        if self._task is None or self._task.done():
            raise RuntimeError("the store is closed")
        self._queue.put_nowait(pending)
        return await pending.future

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._commit(batch)
            except Exception:
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
            try:
                self._on_commit(events)
            except Exception:
                log.exception("publishing committed events failed")
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _commit(self, batch: list[_Pending]) -> list[Any]:
        db = self._writer
        assert db is not None
        next_event, next_delivery = self._next_event_id, self._next_delivery_id
        await db.execute("BEGIN IMMEDIATE")
        try:
            results = [None] * len(batch)
            deliveries = [(i, p) for i, p in enumerate(batch) if p.delivery is not None]
            if deliveries:
                next_event, next_delivery = await self._insert_deliveries(
                    db, deliveries, results, next_event, next_delivery
                )
            for i, pending in enumerate(batch):
                if pending.op is not None:
                    results[i] = await pending.op(db)
            await db.commit()
            self.commits += 1
        except BaseException:
            for pending in batch:
                pending.events.clear()
            with contextlib.suppress(Exception):
                await db.rollback()
            raise
        self._next_event_id, self._next_delivery_id = next_event, next_delivery
        return results

    async def _insert_deliveries(
        self,
        db: aiosqlite.Connection,
        deliveries: list[tuple[int, _Pending]],
        results: list[Any],
        next_event: int,
        next_delivery: int,
    ) -> tuple[int, int]:
        first = next_delivery
        rows = []
        for _, pending in deliveries:
            d = pending.delivery
            assert d is not None
            rows.append((
                next_delivery, d.channel_id, d.token_hash, d.body_sha256, d.received_at,
                d.content_type, d.headers, d.body, d.task_id, d.ref,
            ))  # fmt: skip
            next_delivery += 1
        # A retry of bytes already accepted on the same URL is ignored by the unique index;
        # which ids made it in tells the duplicates apart without a query per delivery.
        await db.executemany(
            "INSERT OR IGNORE INTO deliveries (id, channel_id, token_hash, body_sha256,"
            " received_at, content_type, headers, body, task_id, ref)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        async with db.execute(
            "SELECT id FROM deliveries WHERE id >= ? AND id < ?", (first, next_delivery)
        ) as cursor:
            stored = {int(row[0]) for row in await cursor.fetchall()}
        event_rows = []
        for offset, (i, pending) in enumerate(deliveries):
            if first + offset not in stored:
                continue
            d = pending.delivery
            assert d is not None
            event = Event(
                next_event, "callback.received", d.event_data,
                channel_id=d.channel_id, task_id=d.task_id, ref=d.ref, created_at=d.received_at,
            )  # fmt: skip
            event_rows.append((
                event.id, event.type, event.channel_id, event.task_id, event.ref,
                first + offset, event.data, event.created_at,
            ))  # fmt: skip
            pending.events.append(event)
            results[i] = event
            next_event += 1
        if event_rows:
            await db.executemany(
                "INSERT INTO events (id, type, channel_id, task_id, ref, delivery_id, data,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                event_rows,
            )
        return next_event, next_delivery

    # -- reads -----------------------------------------------------------------------------

    def _read(
        self, sql: str, params: Sequence[Any] = ()
    ) -> aiosqlite.context.Result[aiosqlite.Cursor]:
        if self._reader is None:
            raise RuntimeError("the store is closed")
        return self._reader.execute(sql, params)

    async def get_channel(self, channel_id: str) -> Channel | None:
        sql = "SELECT id, owner, label, created_at, expires_at FROM channels WHERE id = ?"
        async with self._read(sql, (channel_id,)) as cursor:
            row = await cursor.fetchone()
        return Channel(*row) if row else None

    async def events_after(self, query: EventQuery, after: int, limit: int) -> list[Event]:
        where, params = _where(query)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? {where} ORDER BY id LIMIT ?"  # noqa: S608
        async with self._read(sql, (after, *params, limit)) as cursor:
            rows = await cursor.fetchall()
        return [_event(row) for row in rows]

    async def latest_event(self, query: EventQuery) -> Event | None:
        where, params = _where(query)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE 1 {where} ORDER BY id DESC LIMIT 1"  # noqa: S608
        async with self._read(sql, params) as cursor:
            row = await cursor.fetchone()
        return _event(row) if row else None

    async def pruned_through(self, query: EventQuery) -> int:
        sql = "SELECT value FROM meta WHERE key = 'pruned_through'"
        params: tuple[str, ...] = ()
        if query.channel_id is not None:
            sql, params = "SELECT pruned_through FROM channels WHERE id = ?", (query.channel_id,)
        async with self._read(sql, params) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0


def _where(query: EventQuery) -> tuple[str, list[Any]]:
    """SQL conditions for ``query``: fixed column names, every value a bound parameter."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("channel_id", query.channel_id),
        ("task_id", query.task_id),
        ("ref", query.ref),
    ):
        if value is not None:
            clauses.append(f"AND {column} = ?")
            params.append(value)
    if query.types:
        clauses.append(f"AND type IN ({', '.join('?' * len(query.types))})")
        params.extend(sorted(query.types))
    return " ".join(clauses), params


def _event(row: Any) -> Event:
    id_, type_, channel_id, task_id, ref, data, created_at = row
    return Event(
        id_, type_, bytes(data),
        channel_id=channel_id, task_id=task_id, ref=ref, created_at=created_at,
    )  # fmt: skip
