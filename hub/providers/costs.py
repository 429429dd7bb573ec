"""A provider's own figure for what a job cost, read from its answer.

An adapter that finds one puts it in ``Outcome.detail["cost_usd"]``; the engine bills it
instead of the estimate (``hub.tasks.billing.reported_usd``). A figure that cannot be
trusted is dropped, never raised: a job that finished is not failed over its invoice
line, and the estimate stays the billed figure.
"""

from __future__ import annotations

import math
import re

# Above this a figure for one image edit is a misreading (another unit, a balance), not a
# price; it would also overflow the store's micro-dollar columns long before it was real.
MAX_REPORTED_USD = 1000.0
MAX_TEXT = 32
_DECIMAL = re.compile(r"\d{1,12}(?:\.\d{1,12})?|\.\d{1,12}")


def reported_usd(value: object, *, text: bool = False) -> float | None:
    """``value`` as dollars if it is a finite, non-negative number no larger than
    ``MAX_REPORTED_USD`` (with ``text``, also such a number written as plain decimal
    text, ``"0.14"``: a header is text); None for anything else (bools, NaN, ``"1e3"``,
    and text where the provider documents a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not text:
            return None
        written = value.strip()
        if len(written) > MAX_TEXT or _DECIMAL.fullmatch(written) is None:
            return None
        value = float(written)
    if isinstance(value, int):
        # Compared before converting: float() of a JSON integer with 400 digits raises.
        return float(value) if 0 <= value <= MAX_REPORTED_USD else None
    if not isinstance(value, float):
        return None
    figure = value
    if not math.isfinite(figure) or figure < 0 or figure > MAX_REPORTED_USD:
        return None
    return figure


def with_cost(detail: dict[str, object], value: object, *, text: bool = False) -> dict[str, object]:
    """``detail`` with ``cost_usd`` set from ``value`` where it is a figure to bill."""
    figure = reported_usd(value, text=text)
    if figure is not None:
        detail["cost_usd"] = figure
    return detail
