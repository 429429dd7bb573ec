"""Quotas per key: what one tenant may hold at once, so that no key can exhaust the hub
for the others. Beyond one, 429 ``quota_exceeded`` naming it (the field is the quota's
setting, the message says how many are held and allowed).

Channels, live tasks, webhooks and blob bytes are counted in the store, so they hold
across replicas; open streams are counted by each replica (a stream lives in one).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hub.config.settings import Settings
from hub.errors import RateLimited
from hub.store.base import Store, Usage

# Quotas free up when something ends or is deleted, not by the clock: a retry is worth a
# try after a while, not at once.
RETRY_AFTER = 60.0


class QuotaExceeded(RateLimited):
    pass


class Quotas:
    def __init__(self, settings: Settings, store: Store, streams: Callable[[str], int]) -> None:
        self._settings = settings
        self._store = store
        self._streams = streams

    async def usage(self, owner: str) -> Usage:
        return await self._store.usage(owner, time.time())

    async def check(
        self,
        owner: str,
        *,
        channels: int = 0,
        live_tasks: int = 0,
        webhooks: int = 0,
        blob_bytes: int = 0,
    ) -> None:
        """Refuse if adding this much would take ``owner`` past a quota."""
        held = await self.usage(owner)
        settings = self._settings
        for name, adding, now, limit in (
            ("channels", channels, held.channels, settings.quota_channels),
            ("live_tasks", live_tasks, held.live_tasks, settings.quota_live_tasks),
            ("webhooks", webhooks, held.webhooks, settings.quota_webhooks),
            ("blob_bytes", blob_bytes, held.blob_bytes, settings.quota_blob_bytes),
        ):
            if adding and limit and now + adding > limit:
                raise _exceeded(name, now, limit)

    def check_streams(self, owner: str) -> None:
        limit = self._settings.quota_streams
        now = self._streams(owner)
        if limit and now >= limit:
            raise _exceeded("streams", now, limit)


def _exceeded(name: str, held: int, limit: int) -> QuotaExceeded:
    variable = f"HUB_QUOTA_{name.upper()}"
    return QuotaExceeded(
        "quota_exceeded",
        f"{variable}: this key holds {held} of the {limit} {name.replace('_', ' ')} it may",
        retry_after=RETRY_AFTER,
    )
