"""SQLite schema, one migration per entry; ``PRAGMA user_version`` records how many ran."""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: channels, raw deliveries, events.
    """
    CREATE TABLE channels (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        label TEXT,
        created_at REAL NOT NULL,
        expires_at INTEGER NOT NULL,
        pruned_through INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX channels_owner ON channels (owner);

    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id TEXT,
        token_hash BLOB NOT NULL,
        body_sha256 BLOB NOT NULL,
        received_at REAL NOT NULL,
        content_type TEXT NOT NULL,
        headers BLOB NOT NULL,
        body BLOB NOT NULL,
        task_id TEXT,
        ref TEXT
    );
    -- A provider's retry of the same bytes to the same URL is the same delivery.
    CREATE UNIQUE INDEX deliveries_dedupe ON deliveries (token_hash, body_sha256);
    CREATE INDEX deliveries_received ON deliveries (received_at);

    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        channel_id TEXT,
        task_id TEXT,
        ref TEXT,
        delivery_id INTEGER,
        data BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX events_channel ON events (channel_id, id) WHERE channel_id IS NOT NULL;
    CREATE INDEX events_task ON events (task_id, id) WHERE task_id IS NOT NULL;
    CREATE INDEX events_ref ON events (channel_id, ref, id) WHERE ref IS NOT NULL;
    CREATE INDEX events_created ON events (created_at);

    -- Small counters, such as the highest event id retention has deleted.
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """,
    # 2: tasks and blobs.
    """
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        provider TEXT NOT NULL,
        status TEXT NOT NULL,
        input BLOB NOT NULL,
        channel_id TEXT,
        provider_task_id TEXT,
        callback_secret TEXT,
        outputs BLOB NOT NULL DEFAULT '[]',
        result BLOB,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL,
        lease_until REAL,
        deadline REAL NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX tasks_due ON tasks (next_at) WHERE next_at IS NOT NULL;
    CREATE INDEX tasks_owner ON tasks (owner, created_at);

    CREATE TABLE blobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        content_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 BLOB NOT NULL,
        data BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX blobs_created ON blobs (created_at);
    """,
    # 3: API keys made with `hub keys create` (those from HUB_API_KEYS live in the env).
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        hash BLOB NOT NULL UNIQUE,
        label TEXT,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    """,
    # 4: outbound webhooks and their durable outbox.
    """
    CREATE TABLE endpoints (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        format TEXT NOT NULL DEFAULT 'standard',
        channel_id TEXT,
        task_id TEXT,
        created_at REAL NOT NULL,
        after_event_id INTEGER NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_attempt_at REAL,
        last_success_at REAL
    );
    CREATE INDEX endpoints_owner ON endpoints (owner, created_at);
    CREATE INDEX endpoints_channel ON endpoints (channel_id) WHERE channel_id IS NOT NULL;
    CREATE INDEX endpoints_task ON endpoints (task_id) WHERE task_id IS NOT NULL;

    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint_id TEXT NOT NULL,
        event_id INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL,
        lease_until REAL,
        delivered_at REAL,
        UNIQUE (endpoint_id, event_id)
    );
    CREATE INDEX outbox_due ON outbox (next_at) WHERE next_at IS NOT NULL;
    """,
    # Quotas sum a key's blob bytes: by owner, not by a scan of every blob.
    """
    CREATE INDEX blobs_owner ON blobs (owner);
    """,
    # Idempotency keys: one record per (owner, key), the reservation and then the answer.
    """
    CREATE TABLE idempotency_keys (
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        token TEXT NOT NULL,
        lease_until REAL,
        task_id TEXT,
        status INTEGER,
        body BLOB,
        created_at REAL NOT NULL,
        PRIMARY KEY (owner, key)
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
    """,
    # A channel's history: each delivery's public id, raw query, verification and URL;
    # read newest first, by provider task id, and with the event it became.
    """
    ALTER TABLE deliveries ADD COLUMN public_id TEXT;
    ALTER TABLE deliveries ADD COLUMN query TEXT NOT NULL DEFAULT '';
    ALTER TABLE deliveries ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deliveries ADD COLUMN url_id TEXT;
    CREATE UNIQUE INDEX deliveries_public ON deliveries (public_id) WHERE public_id IS NOT NULL;
    CREATE INDEX deliveries_channel ON deliveries (channel_id, id) WHERE public_id IS NOT NULL;
    CREATE INDEX deliveries_ref ON deliveries (channel_id, ref, id) WHERE public_id IS NOT NULL;
    CREATE INDEX events_delivery ON events (delivery_id) WHERE delivery_id IS NOT NULL;
    """,
    # An inbox's own settings, windowed dedupe keyed per channel (task callbacks keep
    # exactly-once on their URL and bytes), callback URLs that can be listed and revoked,
    # and the streams each replica holds open per channel.
    """
    ALTER TABLE channels ADD COLUMN retention_seconds INTEGER;
    ALTER TABLE channels ADD COLUMN options BLOB NOT NULL DEFAULT '{}';
    DROP INDEX deliveries_dedupe;
    CREATE UNIQUE INDEX deliveries_task_once ON deliveries (token_hash, body_sha256)
        WHERE task_id IS NOT NULL;
    CREATE TABLE delivery_keys (
        channel_id TEXT NOT NULL,
        key BLOB NOT NULL,
        at REAL NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (channel_id, key)
    );
    CREATE INDEX delivery_keys_until ON delivery_keys (until);
    CREATE TABLE callback_urls (
        id TEXT PRIMARY KEY,
        channel_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX callback_urls_channel ON callback_urls (channel_id, created_at);
    CREATE INDEX deliveries_url ON deliveries (url_id, received_at) WHERE url_id IS NOT NULL;
    CREATE TABLE presence (
        replica TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        subscribers INTEGER NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (replica, channel_id)
    );
    CREATE INDEX presence_channel ON presence (channel_id);
    """,
    # Paid jobs: a task's error code, its last failed attempt and next one, the marker
    # set before a job is sent, and each provider's calls in its rate window.
    """
    ALTER TABLE tasks ADD COLUMN error_code TEXT;
    ALTER TABLE tasks ADD COLUMN last_error_code TEXT;
    ALTER TABLE tasks ADD COLUMN last_error TEXT;
    ALTER TABLE tasks ADD COLUMN retry_at REAL;
    ALTER TABLE tasks ADD COLUMN sending_at REAL;
    ALTER TABLE tasks ADD COLUMN submitted_at REAL;
    CREATE INDEX tasks_in_flight ON tasks (provider)
        WHERE sending_at IS NOT NULL OR (status = 'submitted' AND result IS NULL);
    CREATE TABLE provider_calls (provider TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX provider_calls_at ON provider_calls (provider, at);
    """,
    # What tasks cost, and monthly budgets per key (hub.store.costs).
    """
    CREATE TABLE task_costs (
        task_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        provider TEXT NOT NULL,
        estimated_micros INTEGER NOT NULL,
        billed_micros INTEGER,
        created_at REAL NOT NULL
    );
    CREATE INDEX task_costs_owner ON task_costs (owner, created_at);
    CREATE TABLE budgets (owner TEXT PRIMARY KEY, monthly_micros INTEGER);
    """,
    # Fallback routing: the providers a task tried, those left, since when it is on this one.
    """
    ALTER TABLE tasks ADD COLUMN route TEXT;
    ALTER TABLE tasks ADD COLUMN fallbacks TEXT;
    ALTER TABLE tasks ADD COLUMN provider_since REAL;
    """,
    # A callback's body kept once, in its delivery: its event's data holds null where the
    # body goes, put back when read (hub.store.event_bodies). NULL: the data is whole.
    """
    ALTER TABLE events ADD COLUMN body_at INTEGER;
    ALTER TABLE events ADD COLUMN body_form TEXT;
    """,
)
