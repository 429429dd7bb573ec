"""PostgreSQL schema, one migration per entry, and the lock that lets several replicas
start at once: the first to take it migrates, the others find the work done."""

from __future__ import annotations

import logging

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection of its own, or one borrowed from a pool: both answer the same queries.
Connection = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger("hub.store")

# pg_advisory_lock key: any constant; "hubm" in ASCII.
MIGRATION_LOCK = 0x6875626D

MIGRATIONS: tuple[str, ...] = (
    # 1: everything the SQLite store has after its migration 2.
    """
    CREATE TABLE channels (
        id text PRIMARY KEY,
        owner text NOT NULL,
        label text,
        created_at double precision NOT NULL,
        expires_at bigint NOT NULL,
        pruned_through bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX channels_owner ON channels (owner);

    CREATE TABLE deliveries (
        id bigserial PRIMARY KEY,
        channel_id text,
        token_hash bytea NOT NULL,
        body_sha256 bytea NOT NULL,
        received_at double precision NOT NULL,
        content_type text NOT NULL,
        headers bytea NOT NULL,
        body bytea NOT NULL,
        task_id text,
        ref text
    );
    -- A provider's retry of the same bytes to the same URL is the same delivery.
    CREATE UNIQUE INDEX deliveries_dedupe ON deliveries (token_hash, body_sha256);
    CREATE INDEX deliveries_received ON deliveries (received_at);

    -- Event ids come from the 'event_id' counter in meta, not a sequence: see postgres.py.
    CREATE TABLE events (
        id bigint PRIMARY KEY,
        type text NOT NULL,
        channel_id text,
        task_id text,
        ref text,
        delivery_id bigint,
        data bytea NOT NULL,
        created_at double precision NOT NULL
    );
    CREATE INDEX events_channel ON events (channel_id, id) WHERE channel_id IS NOT NULL;
    CREATE INDEX events_task ON events (task_id, id) WHERE task_id IS NOT NULL;
    CREATE INDEX events_ref ON events (channel_id, ref, id) WHERE ref IS NOT NULL;
    CREATE INDEX events_created ON events (created_at);

    CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
    INSERT INTO meta (key, value) VALUES ('event_id', 0), ('pruned_through', 0);

    CREATE TABLE tasks (
        id text PRIMARY KEY,
        owner text NOT NULL,
        provider text NOT NULL,
        status text NOT NULL,
        input bytea NOT NULL,
        channel_id text,
        provider_task_id text,
        callback_secret text,
        outputs bytea NOT NULL DEFAULT '[]',
        result bytea,
        error text,
        attempts integer NOT NULL DEFAULT 0,
        next_at double precision,
        lease_until double precision,
        deadline double precision NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE INDEX tasks_due ON tasks (next_at) WHERE next_at IS NOT NULL;
    CREATE INDEX tasks_owner ON tasks (owner, created_at);

    CREATE TABLE blobs (
        id text PRIMARY KEY,
        owner text NOT NULL,
        content_type text NOT NULL,
        size bigint NOT NULL,
        sha256 bytea NOT NULL,
        data bytea NOT NULL,
        created_at double precision NOT NULL
    );
    CREATE INDEX blobs_created ON blobs (created_at);
    """,
    # 2: API keys made with `hub keys create` (those from HUB_API_KEYS live in the env).
    """
    CREATE TABLE api_keys (
        id text PRIMARY KEY,
        owner text NOT NULL,
        hash bytea NOT NULL UNIQUE,
        label text,
        created_at double precision NOT NULL,
        revoked_at double precision
    );
    """,
    # 3: outbound webhooks and their durable outbox.
    """
    CREATE TABLE endpoints (
        id text PRIMARY KEY,
        owner text NOT NULL,
        url text NOT NULL,
        secret text NOT NULL,
        format text NOT NULL DEFAULT 'standard',
        channel_id text,
        task_id text,
        created_at double precision NOT NULL,
        after_event_id bigint NOT NULL,
        failures integer NOT NULL DEFAULT 0,
        last_error text,
        last_attempt_at double precision,
        last_success_at double precision
    );
    CREATE INDEX endpoints_owner ON endpoints (owner, created_at);
    CREATE INDEX endpoints_channel ON endpoints (channel_id) WHERE channel_id IS NOT NULL;
    CREATE INDEX endpoints_task ON endpoints (task_id) WHERE task_id IS NOT NULL;

    CREATE TABLE outbox (
        id bigserial PRIMARY KEY,
        endpoint_id text NOT NULL,
        event_id bigint NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_at double precision,
        lease_until double precision,
        delivered_at double precision,
        UNIQUE (endpoint_id, event_id)
    );
    CREATE INDEX outbox_due ON outbox (next_at) WHERE next_at IS NOT NULL;
    INSERT INTO meta (key, value) VALUES ('webhook_cursor', 0);
    """,
    # Quotas sum a key's blob bytes: by owner, not by a scan of every blob.
    """
    CREATE INDEX blobs_owner ON blobs (owner);
    """,
    # Idempotency keys: one record per (owner, key), the reservation and then the answer.
    """
    CREATE TABLE idempotency_keys (
        owner text NOT NULL,
        key text NOT NULL,
        fingerprint bytea NOT NULL,
        token text NOT NULL,
        lease_until double precision,
        task_id text,
        status integer,
        body bytea,
        created_at double precision NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
    """,
    # A channel's history: each delivery's public id, raw query, verification and URL;
    # read newest first, by provider task id, and with the event it became.
    """
    ALTER TABLE deliveries ADD COLUMN public_id text;
    ALTER TABLE deliveries ADD COLUMN query text NOT NULL DEFAULT '';
    ALTER TABLE deliveries ADD COLUMN verified boolean NOT NULL DEFAULT false;
    ALTER TABLE deliveries ADD COLUMN url_id text;
    CREATE UNIQUE INDEX deliveries_public ON deliveries (public_id) WHERE public_id IS NOT NULL;
    CREATE INDEX deliveries_channel ON deliveries (channel_id, id) WHERE public_id IS NOT NULL;
    CREATE INDEX deliveries_ref ON deliveries (channel_id, ref, id) WHERE public_id IS NOT NULL;
    CREATE INDEX events_delivery ON events (delivery_id) WHERE delivery_id IS NOT NULL;
    """,
    # An inbox's own settings, windowed dedupe keyed per channel (task callbacks keep
    # exactly-once on their URL and bytes), callback URLs that can be listed and revoked,
    # and the streams each replica holds open per channel.
    """
    ALTER TABLE channels ADD COLUMN retention_seconds bigint;
    ALTER TABLE channels ADD COLUMN options bytea NOT NULL DEFAULT '\\x7b7d';
    DROP INDEX deliveries_dedupe;
    CREATE UNIQUE INDEX deliveries_task_once ON deliveries (token_hash, body_sha256)
        WHERE task_id IS NOT NULL;
    CREATE TABLE delivery_keys (
        channel_id text NOT NULL,
        key bytea NOT NULL,
        at double precision NOT NULL,
        until double precision NOT NULL,
        PRIMARY KEY (channel_id, key)
    );
    CREATE INDEX delivery_keys_until ON delivery_keys (until);
    CREATE TABLE callback_urls (
        id text PRIMARY KEY,
        channel_id text NOT NULL,
        created_at double precision NOT NULL,
        expires_at bigint NOT NULL,
        revoked_at double precision
    );
    CREATE INDEX callback_urls_channel ON callback_urls (channel_id, created_at);
    CREATE INDEX deliveries_url ON deliveries (url_id, received_at) WHERE url_id IS NOT NULL;
    CREATE TABLE presence (
        replica text NOT NULL,
        channel_id text NOT NULL,
        subscribers bigint NOT NULL,
        at double precision NOT NULL,
        PRIMARY KEY (replica, channel_id)
    );
    CREATE INDEX presence_channel ON presence (channel_id);
    """,
    # Paid jobs: a task's error code, its last failed attempt and next one, the marker
    # set before a job is sent, and each provider's calls in its rate window.
    """
    ALTER TABLE tasks ADD COLUMN error_code text;
    ALTER TABLE tasks ADD COLUMN last_error_code text;
    ALTER TABLE tasks ADD COLUMN last_error text;
    ALTER TABLE tasks ADD COLUMN retry_at double precision;
    ALTER TABLE tasks ADD COLUMN sending_at double precision;
    ALTER TABLE tasks ADD COLUMN submitted_at double precision;
    CREATE INDEX tasks_in_flight ON tasks (provider)
        WHERE sending_at IS NOT NULL OR (status = 'submitted' AND result IS NULL);
    CREATE TABLE provider_calls (provider text NOT NULL, at double precision NOT NULL);
    CREATE INDEX provider_calls_at ON provider_calls (provider, at);
    """,
    # What tasks cost, and monthly budgets per key (hub.store.costs).
    """
    CREATE TABLE task_costs (
        task_id text PRIMARY KEY,
        owner text NOT NULL,
        provider text NOT NULL,
        estimated_micros bigint NOT NULL,
        billed_micros bigint,
        created_at double precision NOT NULL
    );
    CREATE INDEX task_costs_owner ON task_costs (owner, created_at);
    CREATE TABLE budgets (owner text PRIMARY KEY, monthly_micros bigint);
    """,
    # Fallback routing: the providers a task tried, those left, since when it is on this one.
    """
    ALTER TABLE tasks ADD COLUMN route text;
    ALTER TABLE tasks ADD COLUMN fallbacks text;
    ALTER TABLE tasks ADD COLUMN provider_since double precision;
    """,
    # A callback's body kept once, in its delivery: its event's data holds null where the
    # body goes, put back when read (hub.store.event_bodies). NULL: the data is whole.
    """
    ALTER TABLE events ADD COLUMN body_at integer;
    ALTER TABLE events ADD COLUMN body_form text;
    """,
)


async def migrate(connection: Connection) -> int:
    """Bring the schema up to date; return its version. Safe to call from every replica
    at once: a session-level advisory lock makes them take turns."""
    await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await connection.execute("CREATE TABLE IF NOT EXISTS hub_schema (version integer NOT NULL)")
        version = await connection.fetchval("SELECT max(version) FROM hub_schema") or 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # The version row rides in the script's own transaction: a crash mid-migration
            # leaves the old version recorded and the script runs again.
            async with connection.transaction():
                await connection.execute(script)
                await connection.execute("INSERT INTO hub_schema (version) VALUES ($1)", number)
            log.info("store migrated to version %d", number)
        return len(MIGRATIONS)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
