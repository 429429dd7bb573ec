"""What an edit is expected to cost, before anything is sent: a price table per provider,
by quality and by size (square or not), times the images asked for.

The defaults and where they come from:

- AtlasCloud: its gpt-image-1 edit page's table (low $0.011 / $0.016, medium $0.042 /
  $0.063, high $0.167 / $0.250 for 1024x1024 / 1024x1536 and 1536x1024).
- Segmind: its model page says about $0.14 a call, whatever the options.
- AceData and Eachlabs publish no per-image price for this model. The hub assumes they
  charge what the model's maker lists for it, which is the table AtlasCloud shows (it is
  the same list price). Set ``HUB_ACEDATA_PRICES`` / ``HUB_EACHLABS_PRICES`` to your
  account's real figures.

``quality`` ``auto`` (or unset) is priced as ``high`` and ``size`` ``auto`` (or unset) as
rectangular: the provider may pick either, and a budget must hold whichever it picks.

Prices are kept in micro-dollars (integers), so that sums are exact: five tasks at
$0.042 fill a $0.21 budget exactly, which float addition would not promise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import orjson

from hub.config.env import SettingsError, load, setting

MICROS = 1_000_000
QUALITY_TIERS = ("low", "medium", "high")
SQUARE = ("1024x1024",)

# Per quality: (square, rectangular) in micro-dollars.
Table = Mapping[str, tuple[int, int]]

_LIST_PRICE: Table = {
    "low": (11_000, 16_000),
    "medium": (42_000, 63_000),
    "high": (167_000, 250_000),
}
_FLAT_SEGMIND = 140_000

DEFAULT_PRICES: dict[str, Table] = {
    "atlascloud": _LIST_PRICE,
    "acedata": _LIST_PRICE,
    "eachlabs": _LIST_PRICE,
    "segmind": {tier: (_FLAT_SEGMIND, _FLAT_SEGMIND) for tier in QUALITY_TIERS},
}


@dataclasses.dataclass(frozen=True)
class PriceSettings:
    """``HUB_<PROVIDER>_PRICES``: the provider's table, replacing the default. Either
    compact, ``low:0.011/0.016,medium:0.042/0.063,high:0.167/0.25`` (square / rectangular;
    one figure for both), a single figure for every call (``0.14``), or JSON,
    ``{"low": [0.011, 0.016], "high": 0.2}``. Tiers left out keep their default."""

    prices: str = setting("")


def usd(micros: int) -> float:
    """Micro-dollars as dollars, for the API (six decimals at most)."""
    return round(micros / MICROS, 6)


def to_micros(dollars: float) -> int:
    return round(dollars * MICROS)


class Prices:
    def __init__(self, tables: Mapping[str, Table]) -> None:
        self._tables = dict(tables)

    @classmethod
    def from_env(cls, env: Mapping[str, str], providers: list[str]) -> Prices:
        tables: dict[str, Table] = {}
        for name in providers:
            variable = f"HUB_{name.upper()}_PRICES"
            raw = load(PriceSettings, env, f"HUB_{name.upper()}_").prices
            base = DEFAULT_PRICES.get(name, _LIST_PRICE)
            tables[name] = {**base, **parse(variable, raw)} if raw else base
        return cls(tables)

    def table(self, provider: str) -> Table:
        return self._tables.get(provider, DEFAULT_PRICES.get(provider, _LIST_PRICE))

    def estimate(self, provider: str, options: Mapping[str, object]) -> int:
        """Micro-dollars for one task of ``provider`` with these input options."""
        quality = options.get("quality")
        tier = quality if quality in QUALITY_TIERS else "high"
        square, rectangular = self.table(provider)[str(tier)]
        each = square if options.get("size") in SQUARE else rectangular
        n = options.get("n")
        count = n if isinstance(n, int) and n > 0 else 1
        return each * count


def parse(variable: str, raw: str) -> dict[str, tuple[int, int]]:
    """A price table as ``HUB_<PROVIDER>_PRICES`` writes it; SettingsError naming the
    variable if it cannot be read."""
    text = raw.strip()
    try:
        if text.startswith("{"):
            value = orjson.loads(text)
            if not isinstance(value, dict):
                raise ValueError(text)
            return {_tier(k): _pair(v) for k, v in value.items()}
        if ":" not in text:
            figure = _figure(text)
            return {tier: (figure, figure) for tier in QUALITY_TIERS}
        table = {}
        for part in text.split(","):
            tier, _, figures = part.partition(":")
            square, _, rectangular = figures.partition("/")
            pair = (square, rectangular or square)
            table[_tier(tier.strip())] = (_figure(pair[0]), _figure(pair[1]))
        return table
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise SettingsError(
            f"{variable}={raw!r}: must be a price in USD (0.14), a table"
            " (low:0.011/0.016,medium:0.042/0.063,high:0.167/0.25) or JSON"
        ) from None


def _tier(name: str) -> str:
    if name not in QUALITY_TIERS:
        raise ValueError(name)
    return name


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, list) and len(value) == 2:
        return (_figure(value[0]), _figure(value[1]))
    figure = _figure(value)
    return (figure, figure)


def _figure(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(value)
    dollars = float(value)
    if not math.isfinite(dollars) or dollars < 0 or dollars > 1000:
        raise ValueError(value)
    return to_micros(dollars)
