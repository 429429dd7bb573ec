"""What tasks cost, as both stores keep it: one ``task_costs`` row per task (its estimate,
and what was billed once it ended) and one ``budgets`` row per key that has a budget.

A task's estimate counts against its key's month from the moment the task is written,
in the same transaction, so racing submissions cannot overshoot a budget together; when
the task ends, what it really cost replaces the estimate (0 if nothing was billed, which
releases the reservation). Amounts are integer micro-dollars, so sums are exact.

SQL is written with ``$n`` parameters; the SQLite store turns them into ``?n``.
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.enums import TERMINAL, TaskStatus

# Pseudo-fields ``update_task`` takes beside the task's own columns: what the provider
# said it billed (micro-dollars), or True to count the estimate as billed.
BILLED_MICROS = "billed_micros"
BILLED = "billed"
# A task moved to another provider: (provider, estimate in micro-dollars) replace the
# reservation's, which only ever shrinks (it was made for the dearest on the route).
REROUTED = "rerouted"
COST_FIELDS = frozenset({BILLED_MICROS, BILLED, REROUTED})
OUTCOME_UNKNOWN = "outcome_unknown"  # ErrorCode.OUTCOME_UNKNOWN (hub.providers.base)

INSERT_COST = (
    "INSERT INTO task_costs (task_id, owner, provider, estimated_micros, billed_micros,"
    " created_at) VALUES ($1, $2, $3, $4, NULL, $5)"
)
# What the key has spent or holds reserved since $2: ended tasks at what they cost,
# running ones at their estimate.
SPENT = (
    "SELECT coalesce(sum(coalesce(billed_micros, estimated_micros)), 0) FROM task_costs"
    " WHERE owner = $1 AND created_at >= $2"
)
BUDGET = "SELECT monthly_micros FROM budgets WHERE owner = $1"
# PostgreSQL, a key with a budget row: the row is locked until the task is written, so
# replicas checking the same key's budget take turns.
LOCK_BUDGET = BUDGET + " FOR UPDATE"
# PostgreSQL, a key whose budget comes from HUB_BUDGET_USD: make its row if need be and
# lock it, in one statement (its own figure, if one was set, still wins).
LOCK_DEFAULT_BUDGET = (
    "INSERT INTO budgets (owner, monthly_micros) VALUES ($1, NULL)"
    " ON CONFLICT (owner) DO UPDATE SET owner = excluded.owner RETURNING monthly_micros"
)
SET_BUDGET = (
    "INSERT INTO budgets (owner, monthly_micros)"
    " SELECT owner, CAST($2 AS BIGINT) FROM api_keys WHERE id = $1"
    " ON CONFLICT (owner) DO UPDATE SET monthly_micros = excluded.monthly_micros"
)
# Settling, run before the task's own update (so "submitted" is the status it had):
# accepted by the provider (it gave an id, or the task was submitted), or a send whose
# outcome is unknown (it may have been billed, and is never sent again), means billed
# at the estimate; otherwise nothing was billed. Only once: a settled row keeps its figure.
SETTLE = (
    "UPDATE task_costs SET billed_micros = CASE WHEN EXISTS (SELECT 1 FROM tasks"
    " WHERE id = $1 AND (status = 'submitted' OR provider_task_id IS NOT NULL"
    " OR last_error_code = 'outcome_unknown'))"
    " THEN estimated_micros ELSE 0 END WHERE task_id = $1 AND billed_micros IS NULL"
)
SETTLE_AS_ESTIMATED = (
    "UPDATE task_costs SET billed_micros = estimated_micros"
    " WHERE task_id = $1 AND billed_micros IS NULL"
)
SETTLE_AT = "UPDATE task_costs SET billed_micros = $2 WHERE task_id = $1"
REROUTE = (
    "UPDATE task_costs SET provider = $2, estimated_micros = CASE"
    " WHEN $3 < estimated_micros THEN $3 ELSE estimated_micros END"
    " WHERE task_id = $1 AND billed_micros IS NULL"
)
TASK_COSTS = (
    "SELECT task_id, estimated_micros, billed_micros FROM task_costs WHERE task_id = ANY($1)"
)
TOTALS = (
    "SELECT provider, coalesce(sum(billed_micros), 0) FROM task_costs"
    " WHERE billed_micros IS NOT NULL GROUP BY provider"
)
# By day (days since the epoch, UTC) and provider; $4 is the day's expression.
_SPEND = (
    "SELECT {day} AS day, provider, count(*), coalesce(sum(billed_micros), 0),"
    " coalesce(sum(CASE WHEN billed_micros IS NULL THEN estimated_micros ELSE 0 END), 0)"
    " FROM task_costs WHERE owner = $1 AND created_at >= $2 AND created_at < $3"
    " GROUP BY day, provider ORDER BY day, provider"
)
SPEND_SQLITE = _SPEND.format(day="CAST(created_at / 86400 AS INTEGER)")
SPEND_POSTGRES = _SPEND.format(day="floor(created_at / 86400)::bigint")


Settle = tuple[str, tuple[object, ...]]


def split(changes: Mapping[str, object]) -> tuple[dict[str, object], Settle | None]:
    """The task's own changes, and the statement that settles its cost (None while the
    task runs on)."""
    own = {name: value for name, value in changes.items() if name not in COST_FIELDS}
    status = changes.get("status")
    figure = changes.get(BILLED_MICROS)
    if isinstance(figure, int):
        return own, (SETTLE_AT, (figure,))
    rerouted = changes.get(REROUTED)
    if isinstance(rerouted, tuple):
        return own, (REROUTE, rerouted)
    if status not in TERMINAL:
        return own, None
    unknown = changes.get("error_code") == OUTCOME_UNKNOWN
    if changes.get(BILLED) or unknown or status == TaskStatus.SUCCEEDED:
        return own, (SETTLE_AS_ESTIMATED, ())
    return own, (SETTLE, ())
