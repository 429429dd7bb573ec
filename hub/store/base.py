"""What the rest of the hub needs from a store, and the records it passes in and out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from hub.events import Event


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    owner: str
    label: str | None
    created_at: float
    expires_at: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A callback exactly as it arrived, and the event it becomes once stored."""

    channel_id: str
    # sha256 of the callback token: the same URL, without keeping the credential itself.
    token_hash: bytes
    body_sha256: bytes
    content_type: str
    headers: bytes  # JSON list of [name, value] pairs, as received
    body: bytes
    received_at: float
    task_id: str | None
    ref: str | None
    event_data: bytes


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Which events a stream wants: one channel or one task, optionally narrowed."""

    channel_id: str | None = None
    task_id: str | None = None
    ref: str | None = None
    types: frozenset[str] | None = None

    def matches(self, event: Event) -> bool:
        if self.channel_id is not None and event.channel_id != self.channel_id:
            return False
        if self.task_id is not None and event.task_id != self.task_id:
            return False
        if self.ref is not None and event.ref != self.ref:
            return False
        return self.types is None or event.type in self.types


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""

    async def create_channel(self, channel: Channel) -> None: ...

    async def get_channel(self, channel_id: str) -> Channel | None: ...

    async def add_delivery(self, delivery: Delivery) -> Event | None:
        """Store the delivery and its event in one transaction; return the event once
        committed, or None if the same bytes were already accepted on the same URL."""

    async def events_after(self, query: EventQuery, after: int, limit: int) -> Sequence[Event]:
        """Events matching ``query`` with id > ``after``, in id order."""

    async def latest_event(self, query: EventQuery) -> Event | None: ...

    async def pruned_through(self, query: EventQuery) -> int:
        """The highest event id of this stream that retention has deleted (0 if none)."""

    async def prune(self, before: float) -> int:
        """Delete events and deliveries older than ``before``; return how many events went."""
