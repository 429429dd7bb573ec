"""What the intake needs to know of a channel and of the URL a callback came to, looked up
in the store and remembered briefly, so that a burst of callbacks costs one lookup.

Remembered for at most ``ttl`` seconds, and forgotten at once when an erase or a revoke is
committed on any replica (its event reaches every replica's ``observe``): a revoked URL or
an erased channel stops taking deliveries everywhere within that bound, and on this replica
at once."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec

from hub.formats import loads
from hub.inbox.shapes import ChannelOptions
from hub.store.base import CALLBACK_URL_REVOKED, CHANNEL_DELETED, Channel, Event, Store

T = TypeVar("T")

TTL_SECONDS = 2.0
SIZE = 4096
_OPTIONS = msgspec.json.Decoder(ChannelOptions)


@dataclass(frozen=True, slots=True)
class Inbox:
    """A channel with its options read."""

    channel: Channel
    options: ChannelOptions


class _Recent(Generic[T]):
    """At most ``size`` values, each for at most ``ttl`` seconds."""

    def __init__(self, ttl: float, size: int) -> None:
        self._ttl = ttl
        self._size = size
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, T | None]:
        found = self._items.get(key)
        if found is None or found[0] < time.monotonic():
            return False, None
        return True, found[1]

    def put(self, key: str, value: T) -> None:
        self._items[key] = (time.monotonic() + self._ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def forget(self, key: str) -> None:
        self._items.pop(key, None)


class Lookups:
    def __init__(self, store: Store, ttl: float = TTL_SECONDS, size: int = SIZE) -> None:
        self._store = store
        self._channels: _Recent[Inbox | None] = _Recent(ttl, size)
        self._revoked: _Recent[bool] = _Recent(ttl, size)

    async def channel(self, channel_id: str) -> Inbox | None:
        """The channel and its options; None if it was erased."""
        known, inbox = self._channels.get(channel_id)
        if known:
            return inbox
        channel = await self._store.get_channel(channel_id)
        inbox = None if channel is None else Inbox(channel, options(channel))
        self._channels.put(channel_id, inbox)
        return inbox

    async def url_revoked(self, url_id: str) -> bool:
        known, revoked = self._revoked.get(url_id)
        if known:
            return bool(revoked)
        record = await self._store.get_callback_url(url_id)
        # Gone with its channel, if not there: the channel's own answer (410) comes first.
        revoked = record is None or record.revoked_at is not None
        self._revoked.put(url_id, revoked)
        return revoked

    def observe(self, events: Iterable[Event]) -> list[str]:
        """Forget what committed events changed; the ids of channels erased."""
        erased = []
        for event in events:
            if event.type == CHANNEL_DELETED:
                channel_id = str(loads(event.data)["channel_id"])
                self._channels.forget(channel_id)
                erased.append(channel_id)
            elif event.type == CALLBACK_URL_REVOKED:
                self._revoked.forget(str(loads(event.data)["url_id"]))
        return erased


def options(channel: Channel) -> ChannelOptions:
    return _OPTIONS.decode(channel.options)
