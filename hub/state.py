"""Everything one running hub holds: created by ``create_app``, opened and closed by its
lifespan. Nothing here lives at module level, so two apps in one process share nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine

from hub.auth import Keys
from hub.broker import Broker
from hub.settings import Settings
from hub.signing import Signer
from hub.sse import StreamConfig
from hub.store import open_store
from hub.store.base import Store

log = logging.getLogger("hub")


class HubState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signer = Signer(settings.secret_keys)
        self.keys = Keys(settings.api_keys)
        self.broker = Broker(settings.subscriber_queue_size)
        self.store: Store = open_store(settings, self.broker.publish)
        self.stream_config = StreamConfig(
            heartbeat=settings.heartbeat_seconds,
            retry_ms=settings.retry_ms,
            page_size=settings.replay_page_size,
            send_timeout=settings.send_timeout_seconds,
        )
        self.shutting_down = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        await self.store.open()
        self._spawn(self._prune_forever(), "hub-retention")

    def begin_shutdown(self) -> None:
        """End open streams now, so the server's graceful shutdown is not held by them."""
        self.shutting_down = True
        self.broker.close()

    async def close(self) -> None:
        self.begin_shutdown()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()

    def _spawn(self, coro: Coroutine[None, None, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prune_forever(self) -> None:
        while True:
            try:
                before = time.time() - self.settings.retention_seconds
                deleted = await self.store.prune(before)
                if deleted:
                    log.info("retention pruned %d events", deleted)
            except Exception:
                log.exception("retention pruning failed; will retry")
            await asyncio.sleep(self.settings.prune_interval_seconds)
