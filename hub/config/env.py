"""Settings declared on dataclass fields and read from environment variables.

A field says what it holds and what is allowed, e.g.
``heartbeat_seconds: float = setting(15.0, gt=0, duration=True)``; the annotation gives
the type. ``load(cls, environ, prefix)`` reads ``<PREFIX><FIELD>`` for every such field, and
``check(obj, prefix)`` holds an instance built in code to the same rules (call it from
``__post_init__``), so there is one set of rules however a settings object is made.

Every refusal is a ``SettingsError`` whose text is one line for the operator: the
variable, the value given (``'***'`` for a secret) and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")
V = TypeVar("V")

_RULE = "hub.config.env"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_MASK = "'***'"


class Secret:
    """A string that never shows itself in ``repr`` or ``str`` (and so never in a log)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    """A setting holds a value the hub cannot use."""


def invalid(name: str, shown: str, allowed: str) -> SettingsError:
    """The one shape of every refusal; ``shown`` is the value as the operator wrote it."""
    return SettingsError(f"{name}={shown}: must be {allowed}")


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a field allows. Bounds are inclusive (``ge``, ``le``) or exclusive (``gt``)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    # Seconds, also written with a unit: 90s, 15m, 12h, 7d.
    duration: bool = False
    # An http:// or https:// URL ("" still means unset).
    url: bool = False
    # Another variable for the field, read when its own is unset.
    alias: str | None = None
    # Never echoed in an error, kept out of repr. Secret-typed fields are masked anyway.
    secret: bool = False
    # Said after what is allowed, e.g. "0 = no limit".
    note: str = ""


def setting(
    default: V,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] = (),
    duration: bool = False,
    url: bool = False,
    alias: str | None = None,
    secret: bool = False,
    note: str = "",
) -> V:
    """A dataclass field read from the environment, with what it allows."""
    rule = Rule(ge, gt, le, choices, duration, url, alias, secret, note)
    field: V = dataclasses.field(default=default, repr=not secret, metadata={_RULE: rule})
    return field


def load(cls: type[D], environ: Mapping[str, str], prefix: str, base: D | None = None) -> D:
    """``cls`` from ``<prefix><FIELD>`` variables; unset or empty ones keep the value in
    ``base`` (or the field's default)."""
    kinds = typing.get_type_hints(cls)
    changes: dict[str, Any] = {}
    for field, rule in _rules(cls):
        names = [prefix + field.name.upper(), *([rule.alias] if rule.alias else [])]
        for name in names:
            raw = environ.get(name, "").strip()
            if raw:
                changes[field.name] = _read(name, raw, kinds[field.name], rule)
                break
    built = cls(**changes) if base is None else dataclasses.replace(base, **changes)
    check(built, prefix)
    return built


def check(obj: DataclassInstance, prefix: str) -> None:
    """Raise SettingsError if any field of ``obj`` breaks its rule."""
    kinds = typing.get_type_hints(type(obj))
    for field, rule in _rules(type(obj)):
        value = getattr(obj, field.name)
        kind = kinds[field.name]
        if not _fits(value, rule):
            shown = _MASK if _masked(kind, rule) else repr(value)
            raise invalid(prefix + field.name.upper(), shown, allowed(kind, rule))


def variables(cls: type[DataclassInstance], prefix: str) -> set[str]:
    """Every variable ``load`` reads for ``cls``, aliases included."""
    names = set()
    for field, rule in _rules(cls):
        names.add(prefix + field.name.upper())
        if rule.alias:
            names.add(rule.alias)
    return names


def allowed(kind: Any, rule: Rule) -> str:
    """What a field accepts, in words, as an error message ends."""
    kind = _item(kind)
    notes = [rule.note] if rule.note else []
    if kind is bool:
        text = "one of " + ", ".join(f"{t}, {f}" for t, f in zip(_TRUE, _FALSE, strict=True))
    elif rule.choices:
        text = "one of " + ", ".join(rule.choices)
    elif rule.url:
        text = "an http:// or https:// URL"
    elif kind in (int, float):
        bounds = _bounds(rule)
        if rule.duration:
            text = bounds or "a duration"
            notes.insert(0, ("whole " if kind is int else "") + "seconds, e.g. 15 or 2m")
        else:
            text = "a whole number" if kind is int else "a number"
            if bounds:
                text += (" " if bounds.startswith("from") else ", ") + bounds
    else:
        text = "text"
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _rules(cls: type[DataclassInstance]) -> list[tuple[dataclasses.Field[Any], Rule]]:
    return [(f, f.metadata[_RULE]) for f in dataclasses.fields(cls) if _RULE in f.metadata]


def _read(name: str, raw: str, kind: Any, rule: Rule) -> Any:
    try:
        value = _parse(raw, kind, rule)
        fits = _fits(value, rule)
    except ValueError:
        fits = False
    if not fits:
        shown = _MASK if _masked(kind, rule) else repr(raw)
        raise invalid(name, shown, allowed(kind, rule))
    return value


def _parse(raw: str, kind: Any, rule: Rule) -> Any:
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_parse(part.strip(), item, rule) for part in raw.split(",") if part.strip())
    kind = _item(kind)
    if kind is bool:
        lowered = raw.lower()
        if lowered not in _TRUE + _FALSE:
            raise ValueError(raw)
        return lowered in _TRUE
    if kind is int:
        if not rule.duration:
            return int(raw)
        seconds = _duration(raw)
        if not seconds.is_integer():
            raise ValueError(raw)
        return int(seconds)
    if kind is float:
        return _duration(raw) if rule.duration else float(raw)
    if kind is Secret:
        return Secret(raw)
    if kind is Path:
        return Path(raw)
    if kind is str:
        # Choices match in any case and are stored as declared (the SQLite pragma is
        # spelled FULL, the log format json).
        for choice in rule.choices:
            if raw.lower() == choice.lower():
                return choice
        return raw
    raise TypeError(f"no parser for {kind!r}")


def _fits(value: Any, rule: Rule) -> bool:
    for item in value if isinstance(value, tuple) else (value,):
        if item is None or isinstance(item, bool | Secret | Path):
            continue
        if isinstance(item, int | float):
            if not math.isfinite(item):
                return False
            if rule.ge is not None and item < rule.ge:
                return False
            if rule.gt is not None and item <= rule.gt:
                return False
            if rule.le is not None and item > rule.le:
                return False
        elif isinstance(item, str):
            if rule.choices and item not in rule.choices:
                return False
            if rule.url and item and not _is_url(item):
                return False
    return True


def _is_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _bounds(rule: Rule) -> str:
    if rule.ge is not None and rule.le is not None:
        return f"from {_number(rule.ge)} to {_number(rule.le)}"
    words = []
    if rule.ge is not None:
        words.append(f"at least {_number(rule.ge)}")
    if rule.gt is not None:
        words.append(f"greater than {_number(rule.gt)}")
    if rule.le is not None:
        words.append(f"at most {_number(rule.le)}")
    return " and ".join(words)


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _item(kind: Any) -> Any:
    """``X`` from ``X | None`` or ``tuple[X, ...]``; any other type as it is."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType, tuple):
        return next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return kind


def _masked(kind: Any, rule: Rule) -> bool:
    return rule.secret or _item(kind) is Secret


def _duration(raw: str) -> float:
    """``90``, ``1.5``, ``90s``, ``15m``, ``12h`` or ``7d`` as seconds."""
    raw = raw.lower()
    if raw and raw[-1] in _UNITS:
        return float(raw[:-1]) * _UNITS[raw[-1]]
    return float(raw)
