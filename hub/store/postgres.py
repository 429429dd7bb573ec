"""The store for replicas: PostgreSQL, shared by every hub process (asyncpg).

Event ids in commit order. A ``bigserial`` is not enough: two transactions may take ids
5 and 6 and commit 6 first, so a subscriber that has read 6 would never be sent 5 (its
``Last-Event-ID`` already says 6). So ids come from one counter row in ``meta``, bumped
by the last statement of every transaction that writes events. The bump locks the row
until the transaction ends, so a transaction that takes higher ids can only commit after
the one that took the lower ids has; and PostgreSQL makes a commit visible before it
releases its locks. Hence: whenever an event is visible, so is every event with a lower
id, and "events after id N" is always a complete answer. The counter is the one place
where writers queue, for the time of one commit; callbacks are written in batches (group
commit), so under load many share that wait.

Every event-writing transaction also sends a NOTIFY with its highest id; ``Feed`` turns
those into published events on every replica (see ``postgres_feed.py``).

Tasks are claimed with ``FOR UPDATE SKIP LOCKED`` under a lease: replicas never wait on
each other's claims, and a task whose replica died is taken over once its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from hub.background.loops import Health
from hub.enums import EventType
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
    DELIVERY_COLUMNS,
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
from hub.store.faults import postgres_transient, unavailable_on
from hub.store.postgres_feed import CHANNEL, Feed
from hub.store.postgres_schema import Connection, migrate

log = logging.getLogger("hub.store")

MAX_BATCH = 512
POOL_SIZE = 10
RESERVE_TRIES = 5
# pg_advisory_xact_lock's first key for a provider's limits ("hubl"); the second is the
# provider's name hashed. Replicas counting one account's calls take turns on it.
LIMITS_LOCK = 0x6875626C


# Takes ids for $1 events (bumping the counter, which holds its lock until commit), inserts
# them, and announces the newest id, all in one round trip. _EMIT_ONCE also takes where a
# callback's body kept once goes ($9, $10: see hub.store.event_bodies).
_EMIT_TEMPLATE = """
WITH counter AS (
    UPDATE meta SET value = value + $1 WHERE key = 'event_id' RETURNING value
), inserted AS (
    INSERT INTO events (id, type, channel_id, task_id, ref, delivery_id, data, created_at,
                        body_at, body_form)
    SELECT (SELECT value FROM counter) - $1 + e.n, e.type, e.channel_id, e.task_id, e.ref,
           e.delivery_id, e.data, e.created_at, {body_at}, {body_form}
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::bytea[],
                $8::float8[]{bodies})
         WITH ORDINALITY AS e(type, channel_id, task_id, ref, delivery_id, data, created_at,
                              {body_columns}n)
)
SELECT value, pg_notify('{channel}', value::text)::text FROM counter
"""
_EMIT = _EMIT_TEMPLATE.format(
    body_at="NULL::int4", body_form="NULL::text", bodies="", body_columns="", channel=CHANNEL
)
_EMIT_ONCE = _EMIT_TEMPLATE.format(
    body_at="e.body_at", body_form="e.body_form", bodies=", $9::int4[], $10::text[]",
    body_columns="body_at, body_form, ", channel=CHANNEL,
)  # fmt: skip

_INSERT_DELIVERIES = f"""
INSERT INTO deliveries ({DELIVERY_COLUMNS})
SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::float8[], $5::text[],
                     $6::bytea[], $7::bytea[], $8::text[], $9::text[], $10::text[],
                     $11::text[], $12::bool[], $13::text[])
ON CONFLICT (token_hash, body_sha256) WHERE task_id IS NOT NULL DO NOTHING
RETURNING id, public_id, token_hash, body_sha256
"""  # noqa: S608 (DELIVERY_COLUMNS is a constant)


# Take channels' dedupe keys: the rows returned are those that were free (new, or lapsed).
_CLAIM_KEYS = """
INSERT INTO delivery_keys (channel_id, key, at, until)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::float8[], $4::float8[])
ON CONFLICT (channel_id, key) DO UPDATE SET at = excluded.at, until = excluded.until
WHERE delivery_keys.until <= excluded.at
RETURNING channel_id, key
"""


class _Undo(Exception):
    """Roll the transaction back: the change does not apply."""


@dataclass(slots=True)
class _Pending:
    delivery: Delivery
    future: asyncio.Future[Event | None]


# A dropped or refused connection answers 503, not 500 (see faults).
@unavailable_on(postgres_transient)
class PostgresStore:
    def __init__(
        self,
        dsn: str,
        on_commit: Callable[[Sequence[Event]], None],
        health: Health | None = None,
    ) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self.feed = Feed(dsn, self._events_after_id, on_commit, health=health)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        # Transactions that wrote callbacks: with group commit, fewer than callbacks.
        self.commits = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=2, max_size=POOL_SIZE, reset=_keep_session
        )
        try:
            async with self._pool.acquire() as connection:
                await migrate(connection)
                newest = await connection.fetchval("SELECT value FROM meta WHERE key = 'event_id'")
            await self.feed.start(newest)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._writer = asyncio.create_task(self._write_deliveries(), name="hub-postgres-writer")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the store is closed"))
        await self.feed.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the store is closed")
        return self._pool

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    # -- callbacks: group commit -----------------------------------------------------------

    async def add_delivery(self, delivery: Delivery) -> Event | None:
        if self._writer is None or self._writer.done():
            raise RuntimeError("the store is closed")
        pending = _Pending(delivery, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        return await pending.future

    async def _write_deliveries(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await self._commit_deliveries(batch)
            except asyncio.CancelledError:
                _fail(batch, RuntimeError("the store is closed"))
                raise
            except Exception as exc:
                if postgres_transient(exc):
                    # The server is gone or full: no delivery would do better alone.
                    log.warning("batch of %d deliveries failed: %s", len(batch), exc)
                    _fail(batch, exc)
                    continue
                # One bad delivery must not fail the others that shared its transaction.
                log.exception("batch of %d deliveries failed; retrying one by one", len(batch))
                for pending in batch:
                    try:
                        results = await self._commit_deliveries([pending])
                    except Exception as exc:
                        _fail([pending], exc)
                    else:
                        _answer([pending], results)
                continue
            _answer(batch, results)

    async def _commit_deliveries(self, batch: list[_Pending]) -> list[Event | None]:
        async with self.pool.acquire() as connection, connection.transaction():
            deliveries = await _claim_keys(connection, [pending.delivery for pending in batch])
            rows = await connection.fetch(
                _INSERT_DELIVERIES, *_columns([d for d in deliveries if d is not None])
            )
            stored = {
                r["public_id"] or (bytes(r["token_hash"]), bytes(r["body_sha256"])): r["id"]
                for r in rows
            }
            kept: list[tuple[int, Delivery, int]] = []
            for index, d in enumerate(deliveries):
                if d is None:
                    continue  # a duplicate within its channel's window
                # Twice the same bytes of a task's callback in one batch: the first counts.
                delivery_id = stored.pop(d.public_id or (d.token_hash, d.body_sha256), None)
                if delivery_id is not None and d.event_data is not None:
                    kept.append((index, d, delivery_id))
            new = [
                NewEvent(
                    EventType.CALLBACK_RECEIVED, d.event_data or b"", d.channel_id, d.task_id, d.ref
                )
                for _, d, _ in kept
            ]
            times = [d.received_at for _, d, _ in kept]
            bodies = [d for _, d, _ in kept]
            events = await _emit(connection, new, [i for _, _, i in kept], times, bodies)
        self.commits += 1
        self.feed.committed(events)
        results: list[Event | None] = [None] * len(batch)
        for (index, _, _), event in zip(kept, events, strict=True):
            results[index] = event
        return results

    # -- other writes ----------------------------------------------------------------------

    async def create_channel(self, channel: Channel) -> None:
        await self.pool.execute(
            f"INSERT INTO channels ({CHANNEL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",  # noqa: S608
            *dataclasses.astuple(channel),
        )

    # -- the inbox: erase, callback URLs, own retention, presence ---------------------------

    async def delete_channel(self, channel_id: str) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            done = await connection.execute("DELETE FROM channels WHERE id = $1", channel_id)
            if done != "DELETE 1":
                return False
            await connection.execute(
                "DELETE FROM outbox WHERE endpoint_id IN"
                " (SELECT id FROM endpoints WHERE channel_id = $1)",
                channel_id,
            )
            await connection.execute(
                "DELETE FROM outbox WHERE event_id IN"
                " (SELECT id FROM events WHERE channel_id = $1)",
                channel_id,
            )
            for table in ERASED_WITH_CHANNEL:
                await connection.execute(
                    f"DELETE FROM {table} WHERE channel_id = $1",  # noqa: S608
                    channel_id,
                )
            events = await _emit(
                connection, [NewEvent(CHANNEL_DELETED, dumps({"channel_id": channel_id}))]
            )
        self.feed.committed(events)
        return True

    async def add_callback_url(self, record: CallbackUrlRecord) -> None:
        await self.pool.execute(
            "INSERT INTO callback_urls (id, channel_id, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4)",
            record.id, record.channel_id, record.created_at, record.expires_at,
        )  # fmt: skip

    async def get_callback_url(self, url_id: str) -> CallbackUrlRecord | None:
        row = await self.pool.fetchrow(f"{CALLBACK_URL_SELECT} WHERE u.id = $1", url_id)
        return CallbackUrlRecord(*row) if row else None

    async def list_callback_urls(self, channel_id: str) -> list[CallbackUrlRecord]:
        sql = f"{CALLBACK_URL_SELECT} WHERE u.channel_id = $1 ORDER BY u.created_at, u.id"
        return [CallbackUrlRecord(*row) for row in await self.pool.fetch(sql, channel_id)]

    async def revoke_callback_url(self, url_id: str, at: float) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            done = await connection.execute(
                "UPDATE callback_urls SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                at, url_id,
            )  # fmt: skip
            if done != "UPDATE 1":
                return False
            events = await _emit(
                connection, [NewEvent(CALLBACK_URL_REVOKED, dumps({"url_id": url_id}))]
            )
        self.feed.committed(events)
        return True

    async def prune_channels(self, now: float) -> int:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "UPDATE channels c SET pruned_through = GREATEST(c.pruned_through, p.newest)"
                " FROM (SELECT e.channel_id, max(e.id) AS newest FROM events e"
                "       JOIN channels k ON k.id = e.channel_id"
                "       WHERE k.retention_seconds IS NOT NULL"
                "       AND e.created_at < $1 - k.retention_seconds GROUP BY e.channel_id) p"
                " WHERE c.id = p.channel_id",
                now,
            )
            done = await connection.execute(
                "DELETE FROM events e USING channels c WHERE c.id = e.channel_id"
                " AND c.retention_seconds IS NOT NULL AND e.created_at < $1 - c.retention_seconds",
                now,
            )
            await connection.execute(
                "DELETE FROM deliveries d USING channels c WHERE c.id = d.channel_id"
                " AND c.retention_seconds IS NOT NULL"
                " AND d.received_at < $1 - c.retention_seconds",
                now,
            )
            await connection.execute(
                "DELETE FROM delivery_keys k USING channels c WHERE c.id = k.channel_id"
                " AND c.retention_seconds IS NOT NULL AND k.at < $1 - c.retention_seconds",
                now,
            )
            await connection.execute("DELETE FROM delivery_keys WHERE until < $1", now)
        return int(done.split()[-1])

    async def set_presence(self, replica: str, counts: Mapping[str, int], now: float) -> None:
        live = {channel_id: n for channel_id, n in counts.items() if n}
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "DELETE FROM presence WHERE replica = $1 AND NOT channel_id = ANY($2::text[])",
                replica, list(live),
            )  # fmt: skip
            await connection.execute(
                "INSERT INTO presence (replica, channel_id, subscribers, at)"
                " SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::float8[])"
                " ON CONFLICT (replica, channel_id) DO UPDATE"
                " SET subscribers = excluded.subscribers, at = excluded.at",
                replica, list(live), list(live.values()), [now] * len(live),
            )  # fmt: skip

    async def subscribers(self, channel_id: str, since: float, skip: str) -> int:
        value = await self.pool.fetchval(
            "SELECT coalesce(sum(subscribers), 0) FROM presence"
            " WHERE channel_id = $1 AND at >= $2 AND replica <> $3",
            channel_id, since, skip,
        )  # fmt: skip
        return int(value or 0)

    async def create_task(
        self,
        task: TaskRecord,
        event: NewEvent,
        claim: IdempotencyClaim | None = None,
        charge: Charge | None = None,
    ) -> Event:
        async with self.pool.acquire() as connection, connection.transaction():
            if charge is not None:
                await _reserve(connection, task, charge)
            values = task_values(task)
            await connection.execute(
                f"INSERT INTO tasks ({TASK_COLUMNS})"  # noqa: S608
                f" VALUES ({', '.join(f'${i}' for i in range(1, len(values) + 1))})",
                *values,
            )
            if claim is not None:
                # Raised inside the transaction: the task's insert is rolled back with it.
                bound = claim.owner, claim.key, claim.token, task.id
                if await connection.execute(idem.BIND, *bound) != "UPDATE 1":
                    raise Conflict("idempotency_key_in_use", idem.LOST, retry_after=1.0)
            events = await _emit(connection, [event])
        self.feed.committed(events)
        return events[0]

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
        columns = sorted(changes)
        assignments = "".join(f"{column} = ${i}, " for i, column in enumerate(columns, 4))
        release = "" if "lease_until" in changes else "lease_until = NULL, "
        sql = (
            f"UPDATE tasks SET {assignments}{release}updated_at = $1"  # noqa: S608
            " WHERE id = $2 AND status = ANY($3::text[])"
        )
        try:
            async with self.pool.acquire() as connection, connection.transaction():
                if settle is not None:
                    # Before the task's update, which it reads the old status of; undone
                    # with it if the update does not apply.
                    await connection.execute(settle[0], task_id, *settle[1])
                done = await connection.execute(
                    sql, time.time(), task_id, sorted(expect), *(changes[c] for c in columns)
                )
                if done != "UPDATE 1":
                    raise _Undo
                if delivery is not None:
                    rows = await connection.fetch(_INSERT_DELIVERIES, *_columns([delivery]))
                    if not rows:
                        raise _Undo  # a byte-identical retry of a callback already applied
                await _insert_blobs(connection, blobs)
                written = await _emit(connection, events)
        except _Undo:
            return None
        self.feed.committed(written)
        return written

    async def task_costs(self, task_ids: Sequence[str]) -> dict[str, TaskCost]:
        rows = await self.pool.fetch(costs.TASK_COSTS, list(task_ids)) if task_ids else []
        return {row[0]: TaskCost(row[1], row[2]) for row in rows}

    async def spend(self, owner: str, since: float, until: float) -> list[SpendRow]:
        rows = await self.pool.fetch(costs.SPEND_POSTGRES, owner, since, until)
        return [SpendRow(int(r[0]), r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows]

    async def spent(self, owner: str, since: float) -> int:
        return int(await self.pool.fetchval(costs.SPENT, owner, since))

    async def budget(self, owner: str) -> int | None:
        value = await self.pool.fetchval(costs.BUDGET, owner)
        return None if value is None else int(value)

    async def set_budget(self, key_id: str, micros: int | None) -> bool:
        done = await self.pool.execute(costs.SET_BUDGET, key_id, micros)
        return bool(done == "INSERT 0 1")

    async def spend_totals(self) -> dict[str, int]:
        return {row[0]: int(row[1]) for row in await self.pool.fetch(costs.TOTALS)}

    async def claim_tasks(self, now: float, lease: float, limit: int) -> list[TaskRecord]:
        rows = await self.pool.fetch(
            f"UPDATE tasks SET lease_until = $1 WHERE id IN ("  # noqa: S608
            " SELECT id FROM tasks WHERE next_at <= $2"
            " AND (lease_until IS NULL OR lease_until < $2)"
            " ORDER BY next_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {TASK_COLUMNS}",
            now + lease, now, limit,
        )  # fmt: skip
        return [TaskRecord(*row) for row in rows]

    async def release_leases(self, task_ids: Collection[str] | None = None) -> None:
        """Release the given tasks (work this replica stopped), so another replica takes
        them at once. Without ids, nothing: other replicas' leases are live, and a dead
        replica's expire on their own, after which any replica takes its tasks over."""
        if task_ids:
            await self.pool.execute(
                "UPDATE tasks SET lease_until = NULL WHERE id = ANY($1::text[])", list(task_ids)
            )

    async def renew_leases(self, task_ids: Collection[str], now: float, until: float) -> int:
        done = await self.pool.execute(
            "UPDATE tasks SET lease_until = $1 WHERE id = ANY($2::text[]) AND lease_until >= $3",
            until, list(task_ids), now,
        )  # fmt: skip
        return int(done.split()[-1])

    async def take_slot(
        self,
        task_id: str,
        limits: CallLimits,
        now: float | None,
        changes: Mapping[str, object],
    ) -> Slot:
        check_task_changes("take_slot", changes)
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", LIMITS_LOCK, limits.provider
            )
            now = time.time() if now is None else now
            row = await connection.fetchrow(
                "SELECT status, sending_at FROM tasks WHERE id = $1 FOR UPDATE", task_id
            )
            if row is None or row["status"] != "queued" or row["sending_at"] is not None:
                return Slot(False, reason="gone")
            if limits.concurrency > 0:
                busy = await connection.fetchval(IN_FLIGHT_SQL, limits.provider, task_id)
                if busy >= limits.concurrency:
                    return Slot(False, reason="concurrency", count=int(busy))
            wait = await _count_call(connection, limits, now)
            if wait is not None:
                return wait
            columns = sorted(changes)
            assignments = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, 3))
            await connection.execute(
                f"UPDATE tasks SET {assignments}, updated_at = $2 WHERE id = $1",  # noqa: S608
                task_id, now, *(changes[c] for c in columns),
            )  # fmt: skip
        return Slot(True)

    async def put_blob(self, blob: Blob) -> None:
        async with self.pool.acquire() as connection:
            await _insert_blobs(connection, [blob])

    async def prune(self, before: float) -> int:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "UPDATE channels c SET pruned_through = GREATEST(c.pruned_through, p.newest)"
                " FROM (SELECT channel_id, max(id) AS newest FROM events"
                "       WHERE created_at < $1 AND channel_id IS NOT NULL GROUP BY channel_id) p"
                " WHERE c.id = p.channel_id",
                before,
            )
            await connection.execute(
                "UPDATE meta SET value = GREATEST(value,"
                " (SELECT coalesce(max(id), 0) FROM events WHERE created_at < $1))"
                " WHERE key = 'pruned_through'",
                before,
            )
            done = await connection.execute("DELETE FROM events WHERE created_at < $1", before)
            # Webhooks of events gone have nothing left to send.
            await connection.execute(
                "DELETE FROM outbox WHERE event_id <="
                " (SELECT value FROM meta WHERE key = 'pruned_through')"
            )
            await connection.execute("DELETE FROM deliveries WHERE received_at < $1", before)
            # A delivery gone, its dedupe key goes too: the same again is new.
            await connection.execute("DELETE FROM delivery_keys WHERE at < $1", before)
            await connection.execute("DELETE FROM blobs WHERE created_at < $1", before)
        return int(done.split()[-1])

    async def add_api_key(self, key: ApiKey) -> None:
        await self.pool.execute(
            "INSERT INTO api_keys (id, owner, hash, label, created_at, revoked_at)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            key.id, key.owner, key.hash, key.label, key.created_at, key.revoked_at,
        )  # fmt: skip

    async def revoke_api_key(self, key_id: str, at: float) -> bool:
        done = await self.pool.execute(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", at, key_id
        )
        return bool(done == "UPDATE 1")

    # -- outbound webhooks -----------------------------------------------------------------

    async def add_events(self, events: Sequence[NewEvent]) -> list[Event]:
        async with self.pool.acquire() as connection, connection.transaction():
            written = await _emit(connection, events)
        self.feed.committed(written)
        return written

    async def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        async with self.pool.acquire() as connection, connection.transaction():
            newest = await connection.fetchval("SELECT value FROM meta WHERE key = 'event_id'")
            added = dataclasses.replace(endpoint, after_event_id=newest)
            await connection.execute(
                "INSERT INTO endpoints (id, owner, url, secret, channel_id, task_id, created_at,"
                " after_event_id, format) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                added.id, added.owner, added.url, added.secret, added.channel_id,
                added.task_id, added.created_at, added.after_event_id, added.format,
            )  # fmt: skip
        return added

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute("DELETE FROM outbox WHERE endpoint_id = $1", endpoint_id)
            done = await connection.execute("DELETE FROM endpoints WHERE id = $1", endpoint_id)
        return bool(done == "DELETE 1")

    async def enqueue_webhooks(self, now: float, limit: int) -> bool:
        # Without endpoints, one read and no lock: most hubs have none.
        oldest = await self.pool.fetchval("SELECT min(after_event_id) FROM endpoints")
        if oldest is None:
            return False
        async with self.pool.acquire() as connection, connection.transaction():
            # The cursor row's lock makes replicas take turns (the insert is idempotent too).
            cursor = await connection.fetchval(
                "SELECT value FROM meta WHERE key = 'webhook_cursor' FOR UPDATE"
            )
            cursor = max(cursor, oldest)  # nothing before the oldest endpoint goes anywhere
            ids = await connection.fetch(
                "SELECT id FROM events WHERE id > $1 ORDER BY id LIMIT $2", cursor, limit
            )
            if not ids:
                return False
            upper = ids[-1]["id"]
            for column in ("channel_id", "task_id"):
                await connection.execute(
                    "INSERT INTO outbox (endpoint_id, event_id, next_at)"  # noqa: S608
                    " SELECT p.id, e.id, $1 FROM events e"
                    f" JOIN endpoints p ON p.{column} = e.{column}"
                    " WHERE e.id > $2 AND e.id <= $3 AND e.id > p.after_event_id"
                    f" AND {WEBHOOK_WANTS}"
                    " ON CONFLICT (endpoint_id, event_id) DO NOTHING",
                    now, cursor, upper,
                )  # fmt: skip
            await connection.execute(
                "UPDATE meta SET value = $1 WHERE key = 'webhook_cursor'", upper
            )
        return len(ids) == limit

    async def claim_webhooks(self, now: float, lease: float, limit: int) -> list[WebhookJob]:
        due = await self.pool.fetch(FAIR_DUE_WEBHOOKS, now, ENDPOINT_IN_FLIGHT, limit)
        # Leased only if still free: of two replicas that picked the same entry, the second
        # finds it leased once the first commits, and skips it.
        rows = await self.pool.fetch(
            "UPDATE outbox SET lease_until = $1 WHERE id = ANY($2::int8[])"
            " AND next_at IS NOT NULL AND (lease_until IS NULL OR lease_until < $3)"
            " RETURNING id, attempts, endpoint_id, event_id",
            now + lease, [row["id"] for row in due], now,
        )  # fmt: skip
        jobs = []
        for outbox_id, attempts, endpoint_id, event_id in rows:
            endpoint = await self.get_endpoint(endpoint_id)
            row = await self.pool.fetchrow(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE id = $1",  # noqa: S608
                event_id,
            )
            if endpoint is None or row is None:
                continue  # deleted meanwhile, or pruned: nothing left to send
            jobs.append(WebhookJob(outbox_id, attempts, endpoint, _event(row)))
        return jobs

    async def settle_webhook(
        self, job: WebhookJob, at: float, error: str | None, retry_at: float | None
    ) -> int:
        async with self.pool.acquire() as connection, connection.transaction():
            if error is None:
                await connection.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = NULL,"
                    " lease_until = NULL, delivered_at = $1 WHERE id = $2",
                    at, job.id,
                )  # fmt: skip
                await connection.execute(
                    "UPDATE endpoints SET failures = 0, last_attempt_at = $1,"
                    " last_success_at = $1 WHERE id = $2",
                    at, job.endpoint.id,
                )  # fmt: skip
                return 0
            await connection.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_at = $1, lease_until = NULL"
                " WHERE id = $2",
                retry_at, job.id,
            )  # fmt: skip
            failures = await connection.fetchval(
                "UPDATE endpoints SET failures = failures + 1, last_attempt_at = $1,"
                " last_error = $2 WHERE id = $3 RETURNING failures",
                at, error, job.endpoint.id,
            )  # fmt: skip
        return int(failures or 0)

    async def renew_webhook_leases(self, leases: Mapping[int, float], until: float) -> set[int]:
        rows = await self.pool.fetch(
            "UPDATE outbox o SET lease_until = $1"
            " FROM unnest($2::int8[], $3::float8[]) AS l(id, held)"
            " WHERE o.id = l.id AND o.lease_until = l.held RETURNING o.id",
            until, list(leases), list(leases.values()),
        )  # fmt: skip
        return {int(row[0]) for row in rows}

    # -- reads -----------------------------------------------------------------------------

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        row = await self.pool.fetchrow(f"{ENDPOINT_SELECT} WHERE p.id = $1", endpoint_id)
        return Endpoint(*row) if row else None

    async def list_endpoints(self, owner: str) -> list[Endpoint]:
        sql = f"{ENDPOINT_SELECT} WHERE p.owner = $1 ORDER BY p.created_at"
        return [Endpoint(*row) for row in await self.pool.fetch(sql, owner)]

    async def api_key_owner(self, key_hash: bytes) -> str | None:
        owner = await self.pool.fetchval(
            "SELECT owner FROM api_keys WHERE hash = $1 AND revoked_at IS NULL", key_hash
        )
        return str(owner) if owner is not None else None

    async def list_api_keys(self) -> list[ApiKey]:
        rows = await self.pool.fetch(KEYS_SQL)
        return [ApiKey(*row) for row in rows]

    async def get_channel(self, channel_id: str) -> Channel | None:
        row = await self.pool.fetchrow(
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1",  # noqa: S608
            channel_id,
        )
        return Channel(*row) if row else None

    async def list_channels(self, owner: str, limit: int) -> list[Channel]:
        rows = await self.pool.fetch(
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE owner = $1"  # noqa: S608
            " ORDER BY created_at DESC LIMIT $2",
            owner,
            limit,
        )
        return [Channel(*row) for row in rows]

    async def list_tasks(self, owner: str, limit: int) -> list[TaskRecord]:
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE owner = $1 ORDER BY created_at DESC LIMIT $2"  # noqa: S608
        return [TaskRecord(*row) for row in await self.pool.fetch(sql, owner, limit)]

    async def task_counts(self) -> dict[tuple[str, str], int]:
        sql = "SELECT provider, status, count(*) FROM tasks GROUP BY provider, status"
        return {(r[0], r[1]): r[2] for r in await self.pool.fetch(sql)}

    async def list_deliveries(
        self, channel_id: str, limit: int, before: int | None = None, ref: str | None = None
    ) -> list[DeliveryRecord]:
        sql = f"{DELIVERY_SELECT} AND d.channel_id = $1"
        params: list[Any] = [channel_id, limit]
        if before is not None:
            params.append(before)
            sql += f" AND d.id < ${len(params)}"
        if ref is not None:
            params.append(ref)
            sql += f" AND d.ref = ${len(params)}"
        rows = await self.pool.fetch(f"{sql} ORDER BY d.id DESC LIMIT $2", *params)
        return [DeliveryRecord(*row) for row in rows]

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        row = await self.pool.fetchrow(f"{DELIVERY_SELECT} AND d.public_id = $1", delivery_id)
        return DeliveryRecord(*row) if row else None

    async def delivery_body(self, delivery_id: str) -> bytes | None:
        body = await self.pool.fetchval(
            "SELECT body FROM deliveries WHERE public_id = $1", delivery_id
        )
        return bytes(body) if body is not None else None

    async def events_after(self, query: EventQuery, after: int, limit: int) -> list[Event]:
        where, params = _where(query, first=3)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 {where} ORDER BY id LIMIT $2"  # noqa: S608
        return [_event(row) for row in await self.pool.fetch(sql, after, limit, *params)]

    async def _events_after_id(self, after: int, limit: int) -> list[Event]:
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE id > $1 ORDER BY id LIMIT $2"  # noqa: S608
        return [_event(row) for row in await self.pool.fetch(sql, after, limit)]

    async def latest_event(self, query: EventQuery) -> Event | None:
        where, params = _where(query, first=1)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE true {where} ORDER BY id DESC LIMIT 1"  # noqa: S608
        row = await self.pool.fetchrow(sql, *params)
        return _event(row) if row else None

    async def pruned_through(self, query: EventQuery) -> int:
        if query.channel_id is not None:
            value = await self.pool.fetchval(
                "SELECT pruned_through FROM channels WHERE id = $1", query.channel_id
            )
        else:
            value = await self.pool.fetchval("SELECT value FROM meta WHERE key = 'pruned_through'")
        return int(value or 0)

    async def get_task(self, task_id: str) -> TaskRecord | None:
        sql = f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"  # noqa: S608
        row = await self.pool.fetchrow(sql, task_id)
        return TaskRecord(*row) if row else None

    async def next_due(self) -> float | None:
        value = await self.pool.fetchval(
            "SELECT min(GREATEST(next_at, coalesce(lease_until, 0))) FROM tasks"
            " WHERE next_at IS NOT NULL"
        )
        return float(value) if value is not None else None

    async def usage(self, owner: str, now: float) -> Usage:
        row = await self.pool.fetchrow(USAGE_SQL, owner, now)
        assert row is not None
        return Usage(*(int(value) for value in row))

    async def get_blob(self, blob_id: str) -> Blob | None:
        row = await self.pool.fetchrow(
            "SELECT id, owner, content_type, size, sha256, created_at, data FROM blobs"
            " WHERE id = $1",
            blob_id,
        )
        return Blob(*row) if row else None

    # -- idempotency keys ------------------------------------------------------------------

    async def reserve_idempotency(
        self, new: IdempotencyRecord, now: float, expired_before: float
    ) -> IdempotencyRecord:
        async with self.pool.acquire() as connection:
            for _ in range(RESERVE_TRIES):
                # The upsert takes the row's lock: replicas reserving one key take turns.
                await connection.fetch(
                    idem.RESERVE,
                    new.owner, new.key, new.fingerprint, new.token, new.lease_until,
                    new.created_at, expired_before, now,
                )  # fmt: skip
                row = await connection.fetchrow(idem.SELECT, new.owner, new.key)
                if row is not None:  # else released in between: try again
                    return IdempotencyRecord(*row)
        raise Conflict("idempotency_key_in_use", idem.BUSY, retry_after=1.0)

    async def finish_idempotency(
        self, owner: str, key: str, task_id: str, status: int, body: bytes
    ) -> None:
        await self.pool.execute(idem.FINISH, owner, key, task_id, status, body)

    async def release_idempotency(self, claim: IdempotencyClaim) -> None:
        await self.pool.execute(idem.RELEASE, claim.owner, claim.key, claim.token)

    async def prune_idempotency(self, before: float) -> int:
        done = await self.pool.execute(idem.PRUNE, before)
        return int(done.split()[-1])


async def _emit(
    connection: Connection,
    new: Sequence[NewEvent],
    delivery_ids: Sequence[int | None] | None = None,
    times: Sequence[float] | None = None,
    deliveries: Sequence[Delivery] | None = None,
) -> list[Event]:
    """Write ``new`` as the transaction's last statement (see the module's docstring);
    a callback's body is kept once, in its delivery, where ``deliveries`` allows."""
    if not new:
        return []
    now = time.time()
    created = list(times) if times is not None else [now] * len(new)
    columns = [
        len(new),
        [e.type for e in new],
        [e.channel_id for e in new],
        [e.task_id for e in new],
        [e.ref for e in new],
        list(delivery_ids) if delivery_ids is not None else [None] * len(new),
    ]
    if deliveries is None:
        newest = await connection.fetchval(_EMIT, *columns, [e.data for e in new], created)
    else:
        data = [
            d.event_stub if d.event_stub is not None else e.data
            for e, d in zip(new, deliveries, strict=True)
        ]
        newest = await connection.fetchval(
            _EMIT_ONCE, *columns, data, created,
            [d.event_body_at for d in deliveries], [d.event_body_form for d in deliveries],
        )  # fmt: skip
    first = newest - len(new) + 1
    return [
        Event(
            first + i,
            e.type,
            e.data,
            channel_id=e.channel_id,
            task_id=e.task_id,
            ref=e.ref,
            created_at=created[i],
        )
        for i, e in enumerate(new)
    ]


async def _count_call(connection: Connection, limits: CallLimits, now: float) -> Slot | None:
    """Count a call in the provider's window (under its lock); a Slot to wait if full."""
    if limits.per_window <= 0:
        return None
    await connection.execute(
        "DELETE FROM provider_calls WHERE provider = $1 AND at <= $2",
        limits.provider, now - limits.window,
    )  # fmt: skip
    row = await connection.fetchrow(
        "SELECT count(*) AS n, min(at) AS oldest FROM provider_calls WHERE provider = $1",
        limits.provider,
    )
    assert row is not None  # an aggregate always has its row
    if row["n"] >= limits.per_window:
        return Slot(False, row["oldest"] + limits.window, "rate", int(row["n"]))
    await connection.execute(
        "INSERT INTO provider_calls (provider, at) VALUES ($1, $2)", limits.provider, now
    )
    return None


def _columns(deliveries: Sequence[Delivery]) -> list[list[Any]]:
    return [
        [d.channel_id for d in deliveries],
        [d.token_hash for d in deliveries],
        [d.body_sha256 for d in deliveries],
        [d.received_at for d in deliveries],
        [d.content_type for d in deliveries],
        [d.headers for d in deliveries],
        [d.body for d in deliveries],
        [d.task_id for d in deliveries],
        [d.ref for d in deliveries],
        [d.public_id for d in deliveries],
        [d.query for d in deliveries],
        [d.verified for d in deliveries],
        [d.url_id for d in deliveries],
    ]


async def _claim_keys(connection: Connection, deliveries: list[Delivery]) -> list[Delivery | None]:
    """The batch with each duplicate (its channel's dedupe key taken and live) as None."""
    firsts: dict[tuple[str, bytes], Delivery] = {}
    for d in deliveries:
        if d.dedupe_key is not None and d.channel_id is not None:
            # A twin later in the batch is the duplicate (one statement may not touch a
            # row twice).
            firsts.setdefault((d.channel_id, d.dedupe_key), d)
    if not firsts:
        return list(deliveries)
    # In key order, so replicas claiming overlapping keys lock them in the same order.
    keyed = sorted(firsts.items(), key=lambda item: item[0])
    rows = await connection.fetch(
        _CLAIM_KEYS,
        [channel_id for (channel_id, _), _ in keyed],
        [key for (_, key), _ in keyed],
        [d.received_at for _, d in keyed],
        [d.dedupe_until for _, d in keyed],
    )
    taken = {(r["channel_id"], bytes(r["key"])) for r in rows}
    winners = {id(firsts[key]) for key in taken}
    return [
        d if d.dedupe_key is None or d.channel_id is None or id(d) in winners else None
        for d in deliveries
    ]


async def _insert_blobs(connection: Connection, blobs: Sequence[Blob]) -> None:
    if blobs:
        await connection.executemany(
            "INSERT INTO blobs (id, owner, content_type, size, sha256, data, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            [
                (b.id, b.owner, b.content_type, b.size, b.sha256, b.data, b.created_at)
                for b in blobs
            ],
        )


def _where(query: EventQuery, first: int) -> tuple[str, list[Any]]:
    """SQL conditions for ``query`` with parameters numbered from ``$first``: fixed column
    names, every value a bound parameter."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("channel_id", query.channel_id),
        ("task_id", query.task_id),
        ("ref", query.ref),
    ):
        if value is not None:
            params.append(value)
            clauses.append(f"AND {column} = ${first + len(params) - 1}")
    if query.types:
        params.append(sorted(query.types))
        clauses.append(f"AND type = ANY(${first + len(params) - 1}::text[])")
    return " ".join(clauses), params


def _event(row: asyncpg.Record) -> Event:
    id_, type_, channel_id, task_id, ref, data, created_at, body_at, body_form, body = row
    if body_at is not None and body is not None:
        data = event_bodies.assemble(data, body_at, body_form, body)
    return Event(
        id_, type_, data, channel_id=channel_id, task_id=task_id, ref=ref, created_at=created_at
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset when a connection goes back to the pool: the hub never changes session
    state (settings, LISTEN, advisory locks held past a call), and the default reset
    costs a round trip on every use."""


def _answer(batch: list[_Pending], results: list[Event | None]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(result)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)


async def _reserve(connection: Any, task: TaskRecord, charge: Charge) -> None:
    """Reserve the task's estimate against its key's month (BudgetExceeded if it does not
    fit). The key's budget row stays locked until the transaction ends, so submissions
    for one key, on any replica, are checked one after another."""
    if charge.default_budget is None:
        own = await connection.fetchrow(costs.LOCK_BUDGET, task.owner)
    else:
        own = await connection.fetchrow(costs.LOCK_DEFAULT_BUDGET, task.owner)
    own_budget = None if own is None else own[0]
    budget = own_budget if own_budget is not None else charge.default_budget
    if budget is not None:
        spent = int(await connection.fetchval(costs.SPENT, task.owner, charge.month_start))
        if spent + charge.estimated_micros > budget:
            raise BudgetExceeded(budget, spent, charge.estimated_micros)
    await connection.execute(
        costs.INSERT_COST,
        task.id, task.owner, task.provider, charge.estimated_micros, task.created_at,
    )  # fmt: skip
