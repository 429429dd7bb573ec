"""``GET /v1/usage``: what a key's tasks cost over a range of days, by provider and by day,
and where it stands against its monthly budget.

Days are UTC dates; a task counts on the day it was made. ``billed_usd`` sums the tasks
that ended (what each was billed, 0 for those never billed); ``reserved_usd`` the
estimates of those still running, which the budget counts as spent until they end.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import msgspec
from msgspec import Struct

from hub.errors import invalid
from hub.store.base import SpendRow, Store
from hub.tasks.billing import month_start
from hub.tasks.pricing import usd

DAY = 86_400
MAX_DAYS = 366

# What _totals groups by: a provider's name, or a day (days since the epoch).
Key = TypeVar("Key", str, int)


class ProviderSpend(Struct, forbid_unknown_fields=True):
    provider: str
    tasks: int
    billed_usd: float
    reserved_usd: float


class DaySpend(Struct, forbid_unknown_fields=True):
    date: str  # YYYY-MM-DD, UTC
    tasks: int
    billed_usd: float
    reserved_usd: float


class Budget(Struct, forbid_unknown_fields=True):
    """This calendar month (UTC) against the key's budget; ``monthly_usd`` null: none."""

    month: str  # YYYY-MM
    monthly_usd: float | None
    spent_usd: float  # billed and reserved, this month
    remaining_usd: float | None


class UsageReport(Struct, forbid_unknown_fields=True):
    from_: str = msgspec.field(name="from")
    to: str = ""
    currency: str = "USD"
    tasks: int = 0
    billed_usd: float = 0.0
    reserved_usd: float = 0.0
    by_provider: list[ProviderSpend] = msgspec.field(default_factory=list)
    by_day: list[DaySpend] = msgspec.field(default_factory=list)
    budget: Budget | None = None


def date_range(query: Mapping[str, str], now: float) -> tuple[datetime.date, datetime.date]:
    """``from`` and ``to`` (inclusive, YYYY-MM-DD); by default this month so far."""
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    start = _date(query, "from", today.replace(day=1))
    end = _date(query, "to", today)
    if end < start:
        raise invalid("to", "must not be before from")
    if (end - start).days >= MAX_DAYS:
        raise invalid("to", f"the range may span at most {MAX_DAYS} days")
    return start, end


async def report(
    store: Store, owner: str, start: datetime.date, end: datetime.date, budget: int | None
) -> UsageReport:
    since = _epoch(start)
    rows = await store.spend(owner, since, _epoch(end) + DAY)
    now = time.time()
    spent = await store.spent(owner, month_start(now))
    return UsageReport(
        from_=start.isoformat(),
        to=end.isoformat(),
        tasks=sum(row.tasks for row in rows),
        billed_usd=usd(sum(row.billed_micros for row in rows)),
        reserved_usd=usd(sum(row.reserved_micros for row in rows)),
        by_provider=_by_provider(rows),
        by_day=_by_day(rows),
        budget=Budget(
            month=time.strftime("%Y-%m", time.gmtime(now)),
            monthly_usd=None if budget is None else usd(budget),
            spent_usd=usd(spent),
            remaining_usd=None if budget is None else usd(max(0, budget - spent)),
        ),
    )


def _by_provider(rows: list[SpendRow]) -> list[ProviderSpend]:
    return [
        ProviderSpend(provider, tasks, usd(billed), usd(reserved))
        for provider, (tasks, billed, reserved) in _totals(rows, lambda row: row.provider)
    ]


def _by_day(rows: list[SpendRow]) -> list[DaySpend]:
    return [
        DaySpend(_iso_day(day), tasks, usd(billed), usd(reserved))
        for day, (tasks, billed, reserved) in _totals(rows, lambda row: row.day)
    ]


def _totals(
    rows: list[SpendRow], key: Callable[[SpendRow], Key]
) -> list[tuple[Key, tuple[int, int, int]]]:
    """Tasks, billed and reserved micros summed for each key, in the keys' order."""
    sums: dict[Key, tuple[int, int, int]] = {}
    for row in rows:
        group = key(row)
        tasks, billed, reserved = sums.get(group, (0, 0, 0))
        sums[group] = (
            tasks + row.tasks,
            billed + row.billed_micros,
            reserved + row.reserved_micros,
        )
    return sorted(sums.items())


def _iso_day(day: int) -> str:
    return datetime.datetime.fromtimestamp(day * DAY, datetime.UTC).date().isoformat()


def _epoch(day: datetime.date) -> float:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()


def _date(query: Mapping[str, str], name: str, default: datetime.date) -> datetime.date:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return datetime.date.fromisoformat(raw)
    except ValueError:
        raise invalid(name, "must be a date, YYYY-MM-DD") from None
