"""The default store: SQLite in WAL mode.

Writes go through the group-commit ``Writer`` (its own connection and thread); reads use
an aiosqlite connection, which WAL lets run beside the writer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from hub.errors import Conflict
from hub.formats import dumps
from hub.store import costs, event_bodies
from hub.store import idempotency_sql as idem
from hub.store.base import (
    CALLBACK_URL_REVOKED,
    CHANNEL_DELETED,
    ApiKey,
    Blob,
    BudgetExceeded,
    CallbackUrlRecord,
    CallLimits,
    Channel,
    Charge,
    Delivery,
    DeliveryRecord,
    Endpoint,
    Event,
    EventQuery,
    IdempotencyClaim,
    IdempotencyRecord,
    NewEvent,
    Slot,
    SpendRow,
    TaskCost,
    TaskRecord,
    Usage,
    WebhookJob,
)
from hub.store.columns import (
    CALLBACK_URL_SELECT,
    CHANNEL_COLUMNS,
    DELIVERY_SELECT,
    ENDPOINT_IN_FLIGHT,
    ENDPOINT_SELECT,
    ERASED_WITH_CHANNEL,
    EVENT_COLUMNS,
    FAIR_DUE_WEBHOOKS,
    IN_FLIGHT_SQL,
    KEYS_SQL,
    TASK_COLUMNS,
    USAGE_SQL,
    WEBHOOK_WANTS,
    check_task_changes,
    task_values,
)
from hub.store.faults import sqlite_transient, unavailable_on
from hub.store.sqlite_schema import MIGRATIONS
from hub.store.sqlite_writer import INSERT_DELIVERY, Tx, Writer, delivery_row

log = logging.getLogger("hub.store")


# A full disk or an I/O error answers 503, not 500 (see faults).
@unavailable_on(sqlite_transient)
class SQLiteStore:
    def __init__(
        self,
        path: Path,
        on_commit: Callable[[Sequence[Event]], None],
        *,
        synchronous: str = "FULL",
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._path = path
        self._on_fatal = on_fatal
        self._on_commit = on_commit
        self._synchronous = synchronous
        self._writer: Writer | None = None
        self._wal_sync: _WalSync | None = None
        self._reader: aiosqlite.Connection | None = None

    @property
    def commits(self) -> int:
        return self._writer.commits if self._writer is not None else 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        # The database holds webhook secrets, bodies and blobs: only the hub reads it.
        # SQLite gives its -wal and -shm files the database file's mode.
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        # FULL is kept by fsyncing the WAL ourselves after each commit (see the writer),
        # so SQLite itself commits with NORMAL: subscribers need not wait for the disk.
        deferred = self._synchronous.upper() == "FULL"
        self._wal_sync = _WalSync(self._path) if deferred else None
        self._writer = Writer(
            self._path,
            "NORMAL" if deferred else self._synchronous,
            self._on_commit,
            self._wal_sync,
            self._on_fatal,
        )
        await self._writer.start(_migrate)
        self._reader = await aiosqlite.connect(self._path, isolation_level=None)
        await self._reader.execute("PRAGMA busy_timeout=5000")

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
        if self._reader is not None:
            await self._reader.close()
        self._reader = None
        self._writer = None
        if self._wal_sync is not None:
            self._wal_sync.close()

    async def ping(self) -> None:
        await self._rows("SELECT 1")

    # -- writes ----------------------------------------------------------------------------

    def _write(self) -> Writer:
        if self._writer is None:
            raise RuntimeError("the store is closed")
        return self._writer

    async def create_channel(self, channel: Channel) -> None:
        def op(db: sqlite3.Connection, tx: Tx) -> None:
            db.execute(
                f"INSERT INTO channels ({CHANNEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                dataclasses.astuple(channel),
            )

        await self._write().run(op)

    async def add_delivery(self, delivery: Delivery) -> Event | None:
        writer = self._write()
        result = await writer.delivery(delivery)
        return result

    async def prune(self, before: float) -> int:
        def op(db: sqlite3.Connection, tx: Tx) -> int:
            cutoff = (before,)
            db.execute(
                "UPDATE channels SET pruned_through = MAX(pruned_through, ("
                " SELECT MAX(e.id) FROM events e"
                " WHERE e.channel_id = channels.id AND e.created_at < ?))"
                " WHERE id IN (SELECT channel_id FROM events WHERE created_at < ?)",
                (before, before),
            )
            db.execute(
                "INSERT INTO meta (key, value) SELECT 'pruned_through', MAX(id) FROM events"
                " WHERE created_at < ? HAVING MAX(id) IS NOT NULL"
                " ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                cutoff,
            )
            cursor = db.execute("DELETE FROM events WHERE created_at < ?", cutoff)
            deleted = cursor.rowcount
            # Webhooks of events gone have nothing left to send.
            db.execute(
                "DELETE FROM outbox WHERE event_id <="
                " (SELECT value FROM meta WHERE key = 'pruned_through')"
            )
            db.execute("DELETE FROM deliveries WHERE received_at < ?", cutoff)
            # A delivery gone, its dedupe key goes too: the same again is new.
            db.execute("DELETE FROM delivery_keys WHERE at < ?", cutoff)
            db.execute("DELETE FROM blobs WHERE created_at < ?", cutoff)
            return deleted

        deleted: int = await self._write().run(op)
        return deleted

    # -- the inbox: erase, callback URLs, own retention, presence ---------------------------

    async def delete_channel(self, channel_id: str) -> bool:
        def op(db: sqlite3.Connection, tx: Tx) -> bool:
            if db.execute("DELETE FROM channels WHERE id = ?", (channel_id,)).rowcount != 1:
                return False
            one = (channel_id,)
            db.execute(
                "DELETE FROM outbox WHERE endpoint_id IN"
                " (SELECT id FROM endpoints WHERE channel_id = ?)",
                one,
            )
            db.execute(
                "DELETE FROM outbox WHERE event_id IN (SELECT id FROM events WHERE channel_id = ?)",
                one,
            )
            for table in ERASED_WITH_CHANNEL:
                db.execute(f"DELETE FROM {table} WHERE channel_id = ?", one)  # noqa: S608
            tx.emit(NewEvent(CHANNEL_DELETED, dumps({"channel_id": channel_id})))
            return True

        deleted: bool = await self._write().run(op)
        return deleted

    async def add_callback_url(self, record: CallbackUrlRecord) -> None:
        def op(db: sqlite3.Connection, tx: Tx) -> None:
            db.execute(
                "INSERT INTO callback_urls (id, channel_id, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (record.id, record.channel_id, record.created_at, record.expires_at),
            )

        await self._write().run(op)

    async def get_callback_url(self, url_id: str) -> CallbackUrlRecord | None:
        row = await self._row(f"{CALLBACK_URL_SELECT} WHERE u.id = ?", (url_id,))
        return CallbackUrlRecord(*row) if row else None

    async def list_callback_urls(self, channel_id: str) -> list[CallbackUrlRecord]:
        sql = f"{CALLBACK_URL_SELECT} WHERE u.channel_id = ? ORDER BY u.created_at, u.id"
        return [CallbackUrlRecord(*row) for row in await self._rows(sql, (channel_id,))]

    async def revoke_callback_url(self, url_id: str, at: float) -> bool:
        def op(db: sqlite3.Connection, tx: Tx) -> bool:
            sql = "UPDATE callback_urls SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
            if db.execute(sql, (at, url_id)).rowcount != 1:
                return False
            tx.emit(NewEvent(CALLBACK_URL_REVOKED, dumps({"url_id": url_id})))
            return True

        revoked: bool = await self._write().run(op)
        return revoked

    async def prune_channels(self, now: float) -> int:
        def op(db: sqlite3.Connection, tx: Tx) -> int:
            # Each channel with its own retention: its cutoff is now less that.
            own = "(SELECT ? - c.retention_seconds FROM channels c WHERE c.id = {t}.channel_id)"
            events = own.format(t="events")
            db.execute(
                "UPDATE channels SET pruned_through = MAX(pruned_through, coalesce(("
                " SELECT MAX(e.id) FROM events e WHERE e.channel_id = channels.id"
                " AND e.created_at < ? - channels.retention_seconds), 0))"
                " WHERE retention_seconds IS NOT NULL",
                (now,),
            )
            deleted = db.execute(
                f"DELETE FROM events WHERE channel_id IN"  # noqa: S608
                f" (SELECT id FROM channels WHERE retention_seconds IS NOT NULL)"
                f" AND created_at < {events}",
                (now,),
            ).rowcount
            db.execute(
                f"DELETE FROM deliveries WHERE channel_id IN"  # noqa: S608
                f" (SELECT id FROM channels WHERE retention_seconds IS NOT NULL)"
                f" AND received_at < {own.format(t='deliveries')}",
                (now,),
            )
            keys = own.format(t="delivery_keys")
            db.execute(
                f"DELETE FROM delivery_keys WHERE until < ? OR at < {keys}",  # noqa: S608
                (now, now),
            )
            return int(deleted)

        deleted: int = await self._write().run(op)
        return deleted

    async def set_presence(self, replica: str, counts: Mapping[str, int], now: float) -> None:
        def op(db: sqlite3.Connection, tx: Tx) -> None:
            db.execute("DELETE FROM presence WHERE replica = ?", (replica,))
            db.executemany(
                "INSERT INTO presence (replica, channel_id, subscribers, at) VALUES (?, ?, ?, ?)",
                [(replica, channel_id, n, now) for channel_id, n in counts.items() if n],
            )

        await self._write().run(op)

    async def subscribers(self, channel_id: str, since: float, skip: str) -> int:
        row = await self._row(
            "SELECT coalesce(sum(subscribers), 0) FROM presence"
            " WHERE channel_id = ? AND at >= ? AND replica != ?",
            (channel_id, since, skip),
        )
        return int(row[0]) if row else 0

    async def create_task(
        self,
        task: TaskRecord,
        event: NewEvent,
        claim: IdempotencyClaim | None = None,
        charge: Charge | None = None,
    ) -> Event:
        def op(db: sqlite3.Connection, tx: Tx) -> Event | BudgetExceeded | None:
            # One writer runs every transaction in turn: the checks below and the writes
            # after them cannot interleave with another task's. Every check comes before
            # any write, since a refusal returns (it shares its batch) rather than raising.
            if claim is not None and not _holds(db, claim):
                return None
            if charge is not None:
                refused = _reserve(db, task, charge)
                if refused is not None:
                    return refused
            values = task_values(task)
            db.execute(
                f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES ({', '.join('?' * len(values))})",  # noqa: S608
                values,
            )
            if claim is not None:
                db.execute(idem.sqlite(idem.BIND), (claim.owner, claim.key, claim.token, task.id))
            return tx.emit(event)

        created: Event | BudgetExceeded | None = await self._write().run(op)
        if created is None:
            raise Conflict("idempotency_key_in_use", idem.LOST, retry_after=1.0)
        if isinstance(created, BudgetExceeded):
            raise created
        return created

    async def update_task(
        self,
        task_id: str,
        expect: frozenset[str],
        changes: Mapping[str, object],
        events: Sequence[NewEvent] = (),
        blobs: Sequence[Blob] = (),
        delivery: Delivery | None = None,
    ) -> list[Event] | None:
        changes, settle = costs.split(changes)
        check_task_changes("update_task", changes)

        def op(db: sqlite3.Connection, tx: Tx) -> list[Event] | None:
            columns = sorted(changes)
            assignments = "".join(f"{column} = ?, " for column in columns)
            release = "" if "lease_until" in changes else "lease_until = NULL, "
            states = ", ".join("?" * len(expect))
            # A savepoint, so a transition whose callback turns out to be a byte-identical
            # retry is undone without touching the rest of the batch.
            db.execute("SAVEPOINT task_update")
            if settle is not None:
                db.execute(_numbered(settle[0]), (task_id, *settle[1]))
            cursor = db.execute(
                f"UPDATE tasks SET {assignments}{release}updated_at = ?"  # noqa: S608
                f" WHERE id = ? AND status IN ({states})",
                (*(changes[c] for c in columns), _now(), task_id, *sorted(expect)),
            )
            applied = cursor.rowcount == 1
            if applied and delivery is not None:
                applied = _insert_delivery(db, tx, delivery)
            if not applied:
                db.execute("ROLLBACK TO task_update")
            db.execute("RELEASE task_update")
            if not applied:
                return None
            _insert_blobs(db, blobs)
            return [tx.emit(event) for event in events]

        result: list[Event] | None = await self._write().run(op)
        return result

    async def claim_tasks(self, now: float, lease: float, limit: int) -> list[TaskRecord]:
        def op(db: sqlite3.Connection, tx: Tx) -> list[TaskRecord]:
            rows = db.execute(
                f"UPDATE tasks SET lease_until = ? WHERE id IN ("  # noqa: S608
                " SELECT id FROM tasks WHERE next_at <= ?"
                " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at LIMIT ?)"
                f" RETURNING {TASK_COLUMNS}",
                (now + lease, now, now, limit),
            ).fetchall()
            return [_task(row) for row in rows]

        claimed: list[TaskRecord] = await self._write().run(op)
        return claimed

    async def release_leases(self, task_ids: Collection[str] | None = None) -> None:
        def op(db: sqlite3.Connection, tx: Tx) -> None:
            if task_ids is None:
                db.execute("UPDATE tasks SET lease_until = NULL WHERE lease_until IS NOT NULL")
            else:
                db.executemany(
                    "UPDATE tasks SET lease_until = NULL WHERE id = ?", [(i,) for i in task_ids]
                )

        await self._write().run(op)

    async def renew_leases(self, task_ids: Collection[str], now: float, until: float) -> int:
        def op(db: sqlite3.Connection, tx: Tx) -> int:
            renewed = 0
            for task_id in task_ids:
                renewed += db.execute(
                    "UPDATE tasks SET lease_until = ? WHERE id = ? AND lease_until >= ?",
                    (until, task_id, now),
                ).rowcount
            return renewed

        count: int = await self._write().run(op)
        return count

    async def take_slot(
        self,
        task_id: str,
        limits: CallLimits,
        now: float | None,
        changes: Mapping[str, object],
    ) -> Slot:
        check_task_changes("take_slot", changes)

        # One writer: the op runs alone, so its count and its change cannot interleave
        # with another's.
        def op(db: sqlite3.Connection, tx: Tx) -> Slot:
            at = time.time() if now is None else now
            row = db.execute(
                "SELECT status, sending_at FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
            if row is None or row[0] != "queued" or row[1] is not None:
                return Slot(False, reason="gone")
            if limits.concurrency > 0:
                sql = IN_FLIGHT_SQL.replace("$", "?")
                [busy] = db.execute(sql, (limits.provider, task_id)).fetchone()
                if busy >= limits.concurrency:
                    return Slot(False, reason="concurrency", count=int(busy))
            wait = _count_call(db, limits, at)
            if wait is not None:
                return wait
            columns = sorted(changes)
            assignments = "".join(f"{column} = ?, " for column in columns)
            db.execute(
                f"UPDATE tasks SET {assignments}updated_at = ? WHERE id = ?",  # noqa: S608
                (*(changes[c] for c in columns), at, task_id),
            )
            return Slot(True)

        slot: Slot = await self._write().run(op)
        return slot

    async def put_blob(self, blob: Blob) -> None:
        def op(db: sqlite3.Connection, tx: Tx) -> None:
            _insert_blobs(db, [blob])

        await self._write().run(op)

    async def add_api_key(self, key: ApiKey) -> None:
        def op(db: sqlite3.Connection, tx: Tx) -> None:
            db.execute(
                "INSERT INTO api_keys (id, owner, hash, label, created_at, revoked_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key.id, key.owner, key.hash, key.label, key.created_at, key.revoked_at),
            )

        await self._write().run(op)

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        def op(db: sqlite3.Connection, tx: Tx) -> bool:
            sql = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
            return db.execute(sql, (at, key_id)).rowcount == 1

        revoked: bool = await self._write().run(op)
        return revoked

    # -- outbound webhooks -----------------------------------------------------------------

    async def add_events(self, events: Sequence[NewEvent]) -> list[Event]:
        def op(db: sqlite3.Connection, tx: Tx) -> list[Event]:
            return [tx.emit(event) for event in events]

        written: list[Event] = await self._write().run(op)
        return written

    async def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        def op(db: sqlite3.Connection, tx: Tx) -> Endpoint:
            added = dataclasses.replace(endpoint, after_event_id=tx.last_event_id)
            db.execute(
                "INSERT INTO endpoints (id, owner, url, secret, channel_id, task_id, created_at,"
                " after_event_id, format) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    added.id, added.owner, added.url, added.secret, added.channel_id,
                    added.task_id, added.created_at, added.after_event_id, added.format,
                ),
            )  # fmt: skip
            return added

        added: Endpoint = await self._write().run(op)
        return added

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        def op(db: sqlite3.Connection, tx: Tx) -> bool:
            db.execute("DELETE FROM outbox WHERE endpoint_id = ?", (endpoint_id,))
            return db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,)).rowcount == 1

        deleted: bool = await self._write().run(op)
        return deleted

    async def enqueue_webhooks(self, now: float, limit: int) -> bool:
        # Without endpoints, one read and no write: most hubs have none.
        oldest_row = await self._row("SELECT min(after_event_id) FROM endpoints")
        if oldest_row is None or oldest_row[0] is None:
            return False
        oldest = int(oldest_row[0])

        def op(db: sqlite3.Connection, tx: Tx) -> bool:
            row = db.execute("SELECT value FROM meta WHERE key = 'webhook_cursor'").fetchone()
            # Nothing before the oldest endpoint goes anywhere.
            cursor = max(int(row[0]) if row else 0, oldest)
            ids = db.execute(
                "SELECT id FROM events WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
            ).fetchall()
            if not ids:
                return False
            upper = int(ids[-1][0])
            for column in ("channel_id", "task_id"):
                db.execute(
                    "INSERT OR IGNORE INTO outbox (endpoint_id, event_id, next_at)"  # noqa: S608
                    " SELECT p.id, e.id, ? FROM events e"
                    f" JOIN endpoints p ON p.{column} = e.{column}"
                    " WHERE e.id > ? AND e.id <= ? AND e.id > p.after_event_id"
                    f" AND {WEBHOOK_WANTS}",
                    (now, cursor, upper),
                )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('webhook_cursor', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (upper,),
            )
            return len(ids) == limit

        more: bool = await self._write().run(op)
        return more

    async def claim_webhooks(self, now: float, lease: float, limit: int) -> list[WebhookJob]:
        def op(db: sqlite3.Connection, tx: Tx) -> list[Any]:
            due = db.execute(
                FAIR_DUE_WEBHOOKS.replace("$", "?"), (now, ENDPOINT_IN_FLIGHT, limit)
            ).fetchall()
            leased = []
            for (outbox_id,) in due:
                leased += db.execute(
                    "UPDATE outbox SET lease_until = ? WHERE id = ?"
                    " RETURNING id, attempts, endpoint_id, event_id",
                    (now + lease, outbox_id),
                ).fetchall()
            return leased

        claimed = await self._write().run(op)
        jobs = []
        for outbox_id, attempts, endpoint_id, event_id in claimed:
            endpoint = await self.get_endpoint(endpoint_id)
            row = await self._row(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?",  # noqa: S608
                (event_id,),
            )
            if endpoint is None or row is None:
                continue  # deleted meanwhile, or pruned: nothing left to send
            jobs.append(WebhookJob(outbox_id, attempts, endpoint, _event(row)))
        return jobs

    async def settle_webhook(
        self, job: WebhookJob, at: float, error: str | None, retry_at: float | None
    ) -> int:
        def op(db: sqlite3.Connection, tx: Tx) -> int:
            if error is None:
                db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = NULL,"
                    " lease_until = NULL, delivered_at = ? WHERE id = ?",
                    (at, job.id),
                )
                db.execute(
                    "UPDATE endpoints SET failures = 0, last_attempt_at = ?,"
                    " last_success_at = ? WHERE id = ?",
                    (at, at, job.endpoint.id),
                )
                return 0
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = ?, lease_until = NULL"
                " WHERE id = ?",
                (retry_at, job.id),
            )
            row = db.execute(
                "UPDATE endpoints SET failures = failures + 1, last_attempt_at = ?,"
                " last_error = ? WHERE id = ? RETURNING failures",
                (at, error, job.endpoint.id),
            ).fetchone()
            return int(row[0]) if row else 0

        failures: int = await self._write().run(op)
        return failures

    async def renew_webhook_leases(self, leases: Mapping[int, float], until: float) -> set[int]:
        def op(db: sqlite3.Connection, tx: Tx) -> set[int]:
            sql = "UPDATE outbox SET lease_until = ? WHERE id = ? AND lease_until = ?"
            return {i for i, held in leases.items() if db.execute(sql, (until, i, held)).rowcount}

        renewed: set[int] = await self._write().run(op)
        return renewed

    # -- reads -----------------------------------------------------------------------------

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        row = await self._row(f"{ENDPOINT_SELECT} WHERE p.id = ?", (endpoint_id,))
        return Endpoint(*row) if row else None

    async def list_endpoints(self, owner: str) -> list[Endpoint]:
        sql = f"{ENDPOINT_SELECT} WHERE p.owner = ? ORDER BY p.created_at"
        return [Endpoint(*row) for row in await self._rows(sql, (owner,))]

    async def api_key_owner(self, key_hash: bytes) -> str | None:
        sql = "SELECT owner FROM api_keys WHERE hash = ? AND revoked_at IS NULL"
        row = await self._row(sql, (key_hash,))
        return str(row[0]) if row else None

    async def list_api_keys(self) -> list[ApiKey]:
        sql = KEYS_SQL
        return [ApiKey(*row) for row in await self._rows(sql)]

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one query, run and closed in a single call on the reader's thread.

        One call, not execute-then-fetch: SQLite keeps a connection's read snapshot for as
        long as any of its statements is open, so a statement left open between awaits would
        hand other queries on this connection an old snapshot (a replay could then miss an
        event already published)."""
        if self._reader is None:
            raise RuntimeError("the store is closed")
        return list(await self._reader.execute_fetchall(sql, params))

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def get_channel(self, channel_id: str) -> Channel | None:
        sql = f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = ?"  # noqa: S608
        row = await self._row(sql, (channel_id,))
        return Channel(*row) if row else None

    async def list_channels(self, owner: str, limit: int) -> list[Channel]:
        sql = (
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE owner = ?"  # noqa: S608
            " ORDER BY created_at DESC LIMIT ?"
        )
        return [Channel(*row) for row in await self._rows(sql, (owner, limit))]

    async def list_tasks(self, owner: str, limit: int) -> list[TaskRecord]:
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE owner = ? ORDER BY created_at DESC LIMIT ?"  # noqa: S608
        return [_task(row) for row in await self._rows(sql, (owner, limit))]

    async def task_counts(self) -> dict[tuple[str, str], int]:
        sql = "SELECT provider, status, count(*) FROM tasks GROUP BY provider, status"
        return {(provider, status): n for provider, status, n in await self._rows(sql)}

    async def list_deliveries(
        self, channel_id: str, limit: int, before: int | None = None, ref: str | None = None
    ) -> list[DeliveryRecord]:
        sql = f"{DELIVERY_SELECT} AND d.channel_id = ?"
        params: list[Any] = [channel_id]
        if before is not None:
            sql += " AND d.id < ?"
            params.append(before)
        if ref is not None:
            sql += " AND d.ref = ?"
            params.append(ref)
        rows = await self._rows(f"{sql} ORDER BY d.id DESC LIMIT ?", (*params, limit))
        return [DeliveryRecord(*row) for row in rows]

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        row = await self._row(f"{DELIVERY_SELECT} AND d.public_id = ?", (delivery_id,))
        return DeliveryRecord(*row) if row else None

    async def delivery_body(self, delivery_id: str) -> bytes | None:
        row = await self._row("SELECT body FROM deliveries WHERE public_id = ?", (delivery_id,))
        return bytes(row[0]) if row else None

    async def events_after(self, query: EventQuery, after: int, limit: int) -> list[Event]:
        where, params = _where(query)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ? {where} ORDER BY id LIMIT ?"  # noqa: S608
        rows = await self._rows(sql, (after, *params, limit))
        return [_event(row) for row in rows]

    async def latest_event(self, query: EventQuery) -> Event | None:
        where, params = _where(query)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE 1 {where} ORDER BY id DESC LIMIT 1"  # noqa: S608
        row = await self._row(sql, params)
        return _event(row) if row else None

    async def pruned_through(self, query: EventQuery) -> int:
        sql = "SELECT value FROM meta WHERE key = 'pruned_through'"
        params: tuple[str, ...] = ()
        if query.channel_id is not None:
            sql, params = "SELECT pruned_through FROM channels WHERE id = ?", (query.channel_id,)
        row = await self._row(sql, params)
        return int(row[0]) if row else 0

    async def get_task(self, task_id: str) -> TaskRecord | None:
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"  # noqa: S608
        row = await self._row(sql, (task_id,))
        return _task(row) if row else None

    async def next_due(self) -> float | None:
        sql = (
            "SELECT MIN(MAX(next_at, COALESCE(lease_until, 0))) FROM tasks"
            " WHERE next_at IS NOT NULL"
        )
        row = await self._row(sql)
        return float(row[0]) if row and row[0] is not None else None

    async def usage(self, owner: str, now: float) -> Usage:
        row = await self._row(USAGE_SQL.replace("$", "?"), (owner, now))
        return Usage(*(int(value) for value in row))

    async def task_costs(self, task_ids: Sequence[str]) -> dict[str, TaskCost]:
        if not task_ids:
            return {}
        marks = ", ".join("?" * len(task_ids))
        sql = f"{_COSTS_OF} ({marks})"
        rows = await self._rows(sql, tuple(task_ids))
        return {row[0]: TaskCost(row[1], row[2]) for row in rows}

    async def spend(self, owner: str, since: float, until: float) -> list[SpendRow]:
        rows = await self._rows(_numbered(costs.SPEND_SQLITE), (owner, since, until))
        return [SpendRow(int(r[0]), r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows]

    async def spent(self, owner: str, since: float) -> int:
        row = await self._row(_numbered(costs.SPENT), (owner, since))
        return int(row[0])

    async def budget(self, owner: str) -> int | None:
        row = await self._row(_numbered(costs.BUDGET), (owner,))
        return None if row is None or row[0] is None else int(row[0])

    async def set_budget(self, key_id: str, micros: int | None) -> bool:
        def op(db: sqlite3.Connection, tx: Tx) -> bool:
            return db.execute(_numbered(costs.SET_BUDGET), (key_id, micros)).rowcount == 1

        done: bool = await self._write().run(op)
        return done

    async def spend_totals(self) -> dict[str, int]:
        return {provider: int(total) for provider, total in await self._rows(costs.TOTALS)}

    async def get_blob(self, blob_id: str) -> Blob | None:
        sql = (
            "SELECT id, owner, content_type, size, sha256, created_at, data FROM blobs WHERE id = ?"
        )
        row = await self._row(sql, (blob_id,))
        if row is None:
            return None
        id_, owner, content_type, size, sha256, created_at, data = row
        return Blob(id_, owner, content_type, size, bytes(sha256), created_at, bytes(data))

    # -- idempotency keys ------------------------------------------------------------------

    async def reserve_idempotency(
        self, new: IdempotencyRecord, now: float, expired_before: float
    ) -> IdempotencyRecord:
        def op(db: sqlite3.Connection, tx: Tx) -> IdempotencyRecord:
            # The writer runs one op at a time: the upsert and the read see the same row.
            db.execute(
                idem.sqlite(idem.RESERVE),
                (new.owner, new.key, new.fingerprint, new.token, new.lease_until,
                 new.created_at, expired_before, now),
            ).fetchall()  # fmt: skip
            row = db.execute(idem.sqlite(idem.SELECT), (new.owner, new.key)).fetchone()
            return _idempotency(row)

        held: IdempotencyRecord = await self._write().run(op)
        return held

    async def finish_idempotency(
        self, owner: str, key: str, task_id: str, status: int, body: bytes
    ) -> None:
        def op(db: sqlite3.Connection, tx: Tx) -> None:
            db.execute(idem.sqlite(idem.FINISH), (owner, key, task_id, status, body))

        await self._write().run(op)

    async def release_idempotency(self, claim: IdempotencyClaim) -> None:
        def op(db: sqlite3.Connection, tx: Tx) -> None:
            db.execute(idem.sqlite(idem.RELEASE), (claim.owner, claim.key, claim.token))

        await self._write().run(op)

    async def prune_idempotency(self, before: float) -> int:
        def op(db: sqlite3.Connection, tx: Tx) -> int:
            return int(db.execute(idem.sqlite(idem.PRUNE), (before,)).rowcount)

        deleted: int = await self._write().run(op)
        return deleted


def _insert_delivery(db: sqlite3.Connection, tx: Tx, d: Delivery) -> bool:
    cursor = db.execute(INSERT_DELIVERY, (tx.delivery_id(), *delivery_row(d)))
    return cursor.rowcount == 1


_COSTS_OF = "SELECT task_id, estimated_micros, billed_micros FROM task_costs WHERE task_id IN"


def _numbered(sql: str) -> str:
    """Shared SQL's ``$n`` parameters as SQLite's ``?n``."""
    return sql.replace("$", "?")


def _reserve(db: sqlite3.Connection, task: TaskRecord, charge: Charge) -> BudgetExceeded | None:
    """Reserve the task's estimate against its key's month, or say why it does not fit."""
    row = db.execute(_numbered(costs.BUDGET), (task.owner,)).fetchone()
    budget = row[0] if row is not None and row[0] is not None else charge.default_budget
    if budget is not None:
        found = db.execute(_numbered(costs.SPENT), (task.owner, charge.month_start)).fetchone()
        spent = int(found[0])
        if spent + charge.estimated_micros > budget:
            return BudgetExceeded(budget, spent, charge.estimated_micros)
    db.execute(
        _numbered(costs.INSERT_COST),
        (task.id, task.owner, task.provider, charge.estimated_micros, task.created_at),
    )
    return None


def _count_call(db: sqlite3.Connection, limits: CallLimits, now: float) -> Slot | None:
    """Count a call in the provider's window; a Slot to wait if the window is full."""
    if limits.per_window <= 0:
        return None
    db.execute(
        "DELETE FROM provider_calls WHERE provider = ? AND at <= ?",
        (limits.provider, now - limits.window),
    )
    count, oldest = db.execute(
        "SELECT count(*), min(at) FROM provider_calls WHERE provider = ?", (limits.provider,)
    ).fetchone()
    if count >= limits.per_window:
        return Slot(False, oldest + limits.window, "rate", int(count))
    db.execute("INSERT INTO provider_calls (provider, at) VALUES (?, ?)", (limits.provider, now))
    return None


def _holds(db: sqlite3.Connection, claim: IdempotencyClaim) -> bool:
    """Whether the claim still holds its key, unbound (no other request took it over)."""
    values = (claim.owner, claim.key, claim.token)
    return db.execute(idem.sqlite(idem.HOLDS), values).fetchone() is not None


def _idempotency(row: Any) -> IdempotencyRecord:
    owner, key, fingerprint, token, lease_until, created_at, task_id, status, body = row
    return IdempotencyRecord(
        owner, key, bytes(fingerprint), token, lease_until, created_at, task_id, status,
        bytes(body) if body is not None else None,
    )  # fmt: skip


def _migrate(db: sqlite3.Connection) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # The version bump rides in the script's own transaction, so a crash
        # mid-migration leaves the old version recorded and the script runs again.
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
        log.info("store migrated to version %d", number)


class _WalSync:
    """fsync of the write-ahead log: after it, every transaction committed so far survives
    a power cut, not only a process crash."""

    def __init__(self, path: Path) -> None:
        self._wal = Path(f"{path}-wal")
        self._fd: int | None = None
        self._inode: int | None = None

    def __call__(self) -> None:
        stat = os.stat(self._wal)
        if self._fd is None or stat.st_ino != self._inode:
            # First use, or SQLite started a new log file: make its name durable too.
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self._wal, os.O_RDONLY)
            self._inode = stat.st_ino
            directory = os.open(self._wal.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _now() -> float:
    return time.time()


def _insert_blobs(db: sqlite3.Connection, blobs: Sequence[Blob]) -> None:
    if blobs:
        db.executemany(
            "INSERT OR IGNORE INTO blobs (id, owner, content_type, size, sha256, data, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (b.id, b.owner, b.content_type, b.size, b.sha256, b.data, b.created_at)
                for b in blobs
            ],
        )


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
    id_, type_, channel_id, task_id, ref, data, created_at, body_at, body_form, body = row
    data = bytes(data)
    if body_at is not None and body is not None:
        data = event_bodies.assemble(data, body_at, body_form, bytes(body))
    return Event(
        id_, type_, data,
        channel_id=channel_id, task_id=task_id, ref=ref, created_at=created_at,
    )  # fmt: skip


def _task(row: Any) -> TaskRecord:
    values = list(row)
    for index in (4, 8, 9):  # input, outputs, result come back as bytes or str
        if isinstance(values[index], str):
            values[index] = values[index].encode()
        elif isinstance(values[index], memoryview):
            values[index] = bytes(values[index])
    return TaskRecord(*values)
