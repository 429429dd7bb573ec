"""SQL both stores share: the columns each record is read from, in its field order."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from hub.enums import TERMINAL_EVENTS
from hub.store.base import WEBHOOK_EVENTS, TaskRecord

KEYS_SQL = "SELECT id, owner, hash, label, created_at, revoked_at FROM api_keys ORDER BY created_at"
# An endpoint with its pending count, in Endpoint's field order.
ENDPOINT_SELECT = (
    "SELECT p.id, p.owner, p.url, p.secret, p.channel_id, p.task_id, p.created_at,"
    " p.after_event_id, p.failures, p.last_error, p.last_attempt_at, p.last_success_at,"
    " (SELECT count(*) FROM outbox o WHERE o.endpoint_id = p.id AND o.next_at IS NOT NULL),"
    " p.format FROM endpoints p"
)
# A channel delivery as history shows it (DeliveryRecord's field order), without the body;
# only those with a public id, whose channel still exists.
DELIVERY_SELECT = (
    "SELECT d.public_id, d.id, d.channel_id, c.owner,"
    " (SELECT e.id FROM events e WHERE e.delivery_id = d.id),"
    " d.received_at, d.content_type, length(d.body), d.headers, d.query, d.ref, d.verified,"
    " d.url_id FROM deliveries d JOIN channels c ON c.id = d.channel_id"
    " WHERE d.public_id IS NOT NULL"
)
# What an erased channel takes with it, beyond its outbox entries; the channel row is
# deleted first, so a callback racing the erase finds no channel.
ERASED_WITH_CHANNEL = (
    "events", "deliveries", "delivery_keys", "callback_urls", "endpoints", "presence",
)  # fmt: skip
CHANNEL_COLUMNS = "id, owner, label, created_at, expires_at, retention_seconds, options"
CALLBACK_URL_SELECT = (
    "SELECT u.id, u.channel_id, u.created_at, u.expires_at, u.revoked_at,"
    " (SELECT count(*) FROM deliveries d WHERE d.url_id = u.id),"
    " (SELECT max(d.received_at) FROM deliveries d WHERE d.url_id = u.id)"
    " FROM callback_urls u"
)
DELIVERY_COLUMNS = (
    "channel_id, token_hash, body_sha256, received_at, content_type, headers, body, task_id,"
    " ref, public_id, query, verified, url_id"
)
# An event as _event reads it: a callback's body kept once comes from its delivery.
EVENT_COLUMNS = (
    "id, type, channel_id, task_id, ref, data, created_at, body_at, body_form,"
    " (SELECT d.body FROM deliveries d WHERE d.id = events.delivery_id"
    " AND events.body_at IS NOT NULL)"
)
TASK_COLUMNS = (
    "id, owner, provider, status, input, channel_id, provider_task_id, callback_secret,"
    " outputs, result, error, attempts, next_at, deadline, created_at, updated_at,"
    " error_code, last_error_code, last_error, retry_at, sending_at, submitted_at,"
    " route, fallbacks, provider_since"
)


def task_values(task: TaskRecord) -> list[object]:
    """The record's values in TASK_COLUMNS' order (its fields' order)."""
    return [getattr(task, field.name) for field in dataclasses.fields(task)]


# What update_task may change; anything else is a programming error. Every update ends the
# task's lease unless it sets lease_until itself.
TASK_FIELDS = frozenset(
    {"status", "provider_task_id", "outputs", "result", "error", "attempts", "next_at",
     "lease_until", "error_code", "last_error_code", "last_error", "retry_at", "sending_at",
     "submitted_at", "provider", "route", "fallbacks", "provider_since"}
)  # fmt: skip


def check_task_changes(operation: str, changes: Mapping[str, object]) -> None:
    """Refuse a change to a column outside TASK_FIELDS, before any SQL is built from it."""
    unknown = set(changes) - TASK_FIELDS
    if unknown:
        raise ValueError(f"{operation} cannot change {sorted(unknown)}")


# A provider's jobs unfinished, as its account counts them: being sent (the answer not yet
# recorded, or never: it may have been accepted), or submitted without a result yet.
# $1 provider, $2 the task asking (not counted). tasks_in_flight serves it.
IN_FLIGHT_SQL = (
    "SELECT count(*) FROM tasks WHERE provider = $1 AND id <> $2"
    " AND (sending_at IS NOT NULL OR (status = 'submitted' AND result IS NULL))"
)

# Which events (e) an endpoint (p) is sent, beyond being its channel's or task's:
# never webhook.* events; for the "acedata" format only the task's end.
_ENDS = ", ".join(f"'{event}'" for event in sorted(TERMINAL_EVENTS))
WEBHOOK_WANTS = (
    f"e.type NOT LIKE '{WEBHOOK_EVENTS}' AND (p.format = 'standard' OR e.type IN ({_ENDS}))"
)

# Attempts one endpoint may have in flight at once.
ENDPOINT_IN_FLIGHT = 4

# Outbox entries due at $1, fairly: each tenant's endpoints take turns (one entry per
# tenant per turn, oldest first), and an endpoint never has more than $2 attempts in
# flight, so one tenant's many (or failing, or slow) endpoints cannot hold the others'
# webhooks back. Ids only: the caller leases them with a conditional update, which on
# PostgreSQL decides between replicas racing for the same entry.
FAIR_DUE_WEBHOOKS = """
WITH busy AS (
    SELECT endpoint_id, count(*) AS n FROM outbox
    WHERE next_at IS NOT NULL AND lease_until >= $1 GROUP BY endpoint_id
), due AS (
    SELECT o.id, o.next_at, p.owner, coalesce(b.n, 0) AS busy,
           row_number() OVER (PARTITION BY o.endpoint_id ORDER BY o.next_at, o.id) AS nth
    FROM outbox o
    JOIN endpoints p ON p.id = o.endpoint_id
    LEFT JOIN busy b ON b.endpoint_id = o.endpoint_id
    WHERE o.next_at <= $1 AND (o.lease_until IS NULL OR o.lease_until < $1)
), turns AS (
    SELECT id, next_at,
           row_number() OVER (PARTITION BY owner ORDER BY nth, next_at, id) AS turn
    FROM due WHERE nth + busy <= $2
)
SELECT id FROM turns ORDER BY turn, next_at, id LIMIT $3
"""

# A key's usage (Usage's field order): $1 the owner, $2 now.
USAGE_SQL = (
    "SELECT (SELECT count(*) FROM channels WHERE owner = $1 AND expires_at > $2),"
    " (SELECT count(*) FROM tasks WHERE owner = $1 AND status IN ('queued', 'submitted')),"
    " (SELECT count(*) FROM endpoints WHERE owner = $1),"
    " (SELECT coalesce(sum(size), 0) FROM blobs WHERE owner = $1)"
)
