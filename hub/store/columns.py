"""SQL both stores share: the columns each record is read from, in its field order."""

from __future__ import annotations

from hub.enums import TERMINAL_EVENTS
from hub.store.base import WEBHOOK_EVENTS

KEYS_SQL = "SELECT id, owner, hash, label, created_at, revoked_at FROM api_keys ORDER BY created_at"
# An endpoint with its pending count, in Endpoint's field order.
ENDPOINT_SELECT = (
    "SELECT p.id, p.owner, p.url, p.secret, p.channel_id, p.task_id, p.created_at,"
    " p.after_event_id, p.failures, p.last_error, p.last_attempt_at, p.last_success_at,"
    " (SELECT count(*) FROM outbox o WHERE o.endpoint_id = p.id AND o.next_at IS NOT NULL),"
    " p.format FROM endpoints p"
)
EVENT_COLUMNS = "id, type, channel_id, task_id, ref, data, created_at"
TASK_COLUMNS = (
    "id, owner, provider, status, input, channel_id, provider_task_id, callback_secret,"
    " outputs, result, error, attempts, next_at, deadline, created_at, updated_at"
)
# What update_task may change; anything else is a programming error. Every update ends the
# task's lease unless it sets lease_until itself.
TASK_FIELDS = frozenset(
    {"status", "provider_task_id", "outputs", "result", "error", "attempts", "next_at",
     "lease_until"}
)  # fmt: skip

# Which events (e) an endpoint (p) is sent, beyond being its channel's or task's:
# never webhook.* events; for the "acedata" format only the task's end.
_ENDS = ", ".join(f"'{event}'" for event in sorted(TERMINAL_EVENTS))
WEBHOOK_WANTS = (
    f"e.type NOT LIKE '{WEBHOOK_EVENTS}' AND (p.format = 'standard' OR e.type IN ({_ENDS}))"
)
