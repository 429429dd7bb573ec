"""A task's charge, made before anything is sent: its estimate (``hub.tasks.pricing``),
and the budget it must fit in, this calendar month (UTC).

The store reserves the estimate in the transaction that writes the task (see
``hub.store.costs``), and settles it when the task ends; this module only says what to
reserve and against which month.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Collection, Mapping

import orjson

from hub.config.settings import Settings
from hub.providers.base import Outcome
from hub.store.base import Charge
from hub.store.costs import BILLED_MICROS
from hub.tasks.pricing import Prices, to_micros


def month_start(now: float) -> float:
    """The first instant of ``now``'s calendar month, UTC."""
    day = time.gmtime(now)
    return float(calendar.timegm((day.tm_year, day.tm_mon, 1, 0, 0, 0)))


def next_month(now: float) -> float:
    day = time.gmtime(now)
    year, month = (day.tm_year + 1, 1) if day.tm_mon == 12 else (day.tm_year, day.tm_mon + 1)
    return float(calendar.timegm((year, month, 1, 0, 0, 0)))


class Billing:
    def __init__(
        self,
        settings: Settings,
        providers: Collection[str],
        configured_owners: Collection[str] = (),
    ) -> None:
        self.prices = Prices.from_env(dict(settings.extra_env), sorted(providers))
        # HUB_BUDGET_USD holds for the keys in HUB_API_KEYS; made keys have their own.
        self._default = to_micros(settings.budget_usd) if settings.budget_usd > 0 else None
        self._configured = frozenset(configured_owners)

    def default_budget(self, owner: str) -> int | None:
        return self._default if owner in self._configured else None

    def estimate(self, provider: str, options: Mapping[str, object]) -> int:
        return self.prices.estimate(provider, options)

    def estimate_route(self, providers: Collection[str], data: bytes) -> int:
        """The estimate for a task that may run on any of ``providers``: the dearest's,
        so that whichever runs it, the reservation covers it."""
        options = orjson.loads(data)
        return max(self.estimate(provider, options) for provider in providers)

    def charge(self, owner: str, providers: Collection[str], data: bytes, now: float) -> Charge:
        """What to reserve for a task whose input (JSON, ``TaskInput.to_json``) is ``data``
        and which may run on any of ``providers``."""
        return Charge(
            estimated_micros=self.estimate_route(providers, data),
            month_start=month_start(now),
            default_budget=self.default_budget(owner),
        )


def reported_usd(outcome: Outcome) -> float | None:
    """The provider's own figure for a finished job, where its answer carried one (an
    adapter puts it in ``detail["cost_usd"]``): it replaces the estimate."""
    figure = outcome.detail.get("cost_usd")
    if isinstance(figure, int | float) and not isinstance(figure, bool) and figure >= 0:
        return float(figure)
    return None


def provider_cost(figure: float | None) -> dict[str, object]:
    """``update_task``'s change for the provider's figure, if it gave one."""
    return {} if figure is None else {BILLED_MICROS: to_micros(figure)}
