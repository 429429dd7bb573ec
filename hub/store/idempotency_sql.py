"""The idempotency-key statements both stores run, in PostgreSQL's ``$n`` form (SQLite
runs them with ``?n``, the same numbered parameters)."""

from __future__ import annotations

RECORD_COLUMNS = "owner, key, fingerprint, token, lease_until, created_at, task_id, status, body"

# One statement, so it is atomic on both stores: the key is taken if it is free, expired
# ($7), or held by a reservation whose lease ran out ($8) before it made a task. A row
# comes back only when taken.
RESERVE = """
INSERT INTO idempotency_keys (owner, key, fingerprint, token, lease_until, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (owner, key) DO UPDATE SET
    fingerprint = excluded.fingerprint, token = excluded.token,
    lease_until = excluded.lease_until, created_at = excluded.created_at,
    task_id = NULL, status = NULL, body = NULL
WHERE idempotency_keys.created_at < $7
   OR (idempotency_keys.task_id IS NULL AND idempotency_keys.lease_until < $8)
RETURNING token
"""

SELECT = f"SELECT {RECORD_COLUMNS} FROM idempotency_keys WHERE owner = $1 AND key = $2"  # noqa: S608

# In the task-creating transaction: only the holder's token binds, and only once.
BIND = (
    "UPDATE idempotency_keys SET task_id = $4, lease_until = NULL"
    " WHERE owner = $1 AND key = $2 AND token = $3 AND task_id IS NULL"
)

HOLDS = (
    "SELECT 1 FROM idempotency_keys"
    " WHERE owner = $1 AND key = $2 AND token = $3 AND task_id IS NULL"
)

FINISH = (
    "UPDATE idempotency_keys SET status = $4, body = $5"
    " WHERE owner = $1 AND key = $2 AND task_id = $3 AND status IS NULL"
)

RELEASE = (
    "DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND token = $3 AND task_id IS NULL"
)

PRUNE = "DELETE FROM idempotency_keys WHERE created_at < $1"

BUSY = "requests with this Idempotency-Key keep coming and going; retry shortly"
LOST = "another request with this Idempotency-Key took it over; nothing was created"


def sqlite(sql: str) -> str:
    return sql.replace("$", "?")
