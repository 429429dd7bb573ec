"""The data of the one event a stream makes itself, ``stream.gap``."""

from __future__ import annotations

from msgspec import Struct


class StreamGap(Struct, forbid_unknown_fields=True):
    """History after ``last_event_id`` was pruned up to ``pruned_through``: what remains
    follows."""

    last_event_id: int
    pruned_through: int
