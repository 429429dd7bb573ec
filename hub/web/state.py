"""Everything one running hub holds: created by ``create_app``, opened and closed by its
lifespan. Nothing here lives at module level, so two apps in one process share nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING

import httpx
from starlette.requests import HTTPConnection

from hub.access.keys import Keys
from hub.access.quotas import Quotas
from hub.access.ratelimit import RateLimit
from hub.access.tokens import Signer
from hub.background.loops import Health, Step, forever
from hub.config.settings import Settings
from hub.inbox.lookup import Lookups
from hub.inbox.presence import Presence
from hub.metrics import Metrics
from hub.net import bounded
from hub.providers import PROVIDERS
from hub.providers.config import provider_configs
from hub.store import open_store
from hub.store.base import Event, Store
from hub.streams.broker import Broker
from hub.streams.sse import StreamConfig, Streams
from hub.tasks.billing import Billing
from hub.tasks.engine import TaskEngine
from hub.webhooks.dispatcher import Webhooks

if TYPE_CHECKING:
    from hub.sandbox.app import Sandbox

log = logging.getLogger("hub")

# One client for every outbound call: providers, input images, outputs. Segmind's
# synchronous call takes about a minute, so reads may be long; connects may not.
CLIENT_TIMEOUT = httpx.Timeout(200.0, connect=10.0)
CLIENT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
KEY_REFRESH_SECONDS = 2.0


class HubState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signer = Signer(settings.secret_keys)
        self.keys = Keys(settings.api_keys)
        self.key_limit = RateLimit(settings.rate_limit_per_key, "API key")
        self.callback_limit = RateLimit(settings.rate_limit_per_callback, "callback URL")
        self.broker = Broker(settings.subscriber_queue_size, settings.subscriber_queue_bytes)
        self.metrics = Metrics()
        self.health = Health()
        self._task_counts: dict[tuple[str, str], int] = {}
        self.metrics.watch(lambda: self.broker.subscriber_count, lambda: self._task_counts)
        self._spend: dict[str, float] = {}
        self.metrics.watch_spend(lambda: self._spend)
        self.store: Store = open_store(settings, self._committed, self._store_failed, self.health)
        # Set when the store stopped for good (an fsync failed): the process must end.
        self.failed: BaseException | None = None
        self._exit: Callable[[], None] | None = None
        self.lookups = Lookups(self.store)
        self.quotas = Quotas(settings, self.store, lambda owner: self.streams.count(owner))
        self.streams = Streams(
            StreamConfig(
                heartbeat=settings.heartbeat_seconds,
                retry_ms=settings.retry_ms,
                page_size=settings.replay_page_size,
                send_timeout=settings.send_timeout_seconds,
            )
        )
        self.presence = Presence(self.store, self.streams, shared=settings.postgres)
        self.provider_configs = provider_configs(settings)
        self.sandbox: Sandbox | None = None
        if settings.sandbox:
            # Imported only when asked for: a hub serving real providers never loads it.
            from hub.sandbox.app import Sandbox, SandboxSettings

            self.sandbox = Sandbox(SandboxSettings.from_env(dict(settings.extra_env)))
        self.shutting_down = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._engine: TaskEngine | None = None
        self._webhooks: Webhooks | None = None

    def owner(self, connection: HTTPConnection) -> str:
        """The tenant of the request's API key (401 without one), within its rate (429)."""
        owner = self.keys.require(connection.headers.get("authorization", ""))
        self.key_limit.check(owner)
        return owner

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the hub is not started")
        return self._client

    @property
    def engine(self) -> TaskEngine:
        if self._engine is None:
            raise RuntimeError("the hub is not started")
        return self._engine

    async def open(self) -> None:
        try:
            await self._open()
        except BaseException:
            # A start that fails part way (a bad price table, a store that will not open)
            # closes what it opened: a store's writer thread left running would keep the
            # process from ever exiting.
            await self.close()
            raise

    async def _open(self) -> None:
        await self.store.open()
        await self._load_keys()
        self._client = httpx.AsyncClient(
            timeout=CLIENT_TIMEOUT,
            limits=CLIENT_LIMITS,
            headers={"user-agent": "hub", **bounded.ASK_IDENTITY},
        )
        if self.sandbox is not None:
            await self.sandbox.start()
        providers = {
            name: PROVIDERS[name](config, self._client)
            for name, config in self.provider_configs.items()
        }
        self._engine = TaskEngine(
            self.settings,
            self.store,
            self.signer,
            self._client,
            providers,
            self.provider_configs,
            self.metrics,
            self.health,
            billing=Billing(self.settings, self.provider_configs, self.keys.configured),
        )
        await self._engine.start()
        self._webhooks = Webhooks(
            self.settings,
            self.store,
            self._client,
            metrics=self.metrics,
            health=self.health,
            revoked=lambda owner: owner in self.keys.revoked,
        )
        await self._webhooks.start()
        self._loop(
            "retention", self._prune, stuck_after=self.settings.prune_interval_seconds * 2 + 60
        )
        self._loop("keys", self._refresh_keys, stuck_after=KEY_REFRESH_SECONDS * 15)
        self._loop("streams", self.streams.tick, stuck_after=30.0)
        if self.presence.shared:
            self._loop("presence", self.presence.beat, stuck_after=self.presence.every * 6 + 30)

    def on_exit(self, exit: Callable[[], None]) -> None:
        """How to end the process (the server's own way), for a failure nothing survives."""
        self._exit = exit

    def _store_failed(self, exc: BaseException) -> None:
        self.failed = exc
        self.begin_shutdown()
        if self._exit is not None:
            self._exit()

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
        if self._webhooks is not None:
            await self._webhooks.stop()
        if self._engine is not None:
            await self._engine.stop()
        if self.sandbox is not None:
            await self.sandbox.stop()
        if self._client is not None:
            await self._client.aclose()
        await self.store.close()

    async def render_metrics(self) -> bytes:
        async def refresh() -> None:
            self._task_counts = await self.store.task_counts()
            totals = await self.store.spend_totals()
            self._spend = {provider: micros / 1e6 for provider, micros in totals.items()}

        return await self.metrics.render(refresh)

    def _committed(self, events: Sequence[Event]) -> None:
        """New events, in id order: to the streams now, and to webhooks soon."""
        for channel_id in self.lookups.observe(events):
            self.streams.end_channel(channel_id)  # erased, on this replica or another
        self.broker.publish(events)
        self.metrics.published(event.type for event in events)
        if self._webhooks is not None:
            self._webhooks.kick()

    def _spawn(self, coro: Coroutine[None, None, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _load_keys(self) -> None:
        made = await self.store.list_api_keys()
        before = self.keys.revoked
        revoked = frozenset(k.owner for k in made if k.revoked_at is not None)
        self.keys.load({k.hash: k.owner for k in made if k.revoked_at is None}, revoked)
        if revoked - before:
            # A revoked key's open streams end now, on every replica (each loads the keys).
            self.streams.end_for(revoked - before)

    def _loop(self, name: str, step: Step, *, stuck_after: float) -> None:
        component = self.health.component(name, stuck_after=stuck_after)
        component.task = self._spawn(forever(component, step), f"hub-{name}")

    async def _refresh_keys(self) -> float:
        """Keys made or revoked with `hub keys` (from any process, any replica) take
        effect within KEY_REFRESH_SECONDS."""
        await self._load_keys()
        return KEY_REFRESH_SECONDS

    async def _prune(self) -> float:
        before = time.time() - self.settings.retention_seconds
        deleted = await self.store.prune(before)
        deleted += await self.store.prune_channels(time.time())
        if deleted:
            log.info("retention pruned %d events", deleted)
        # Idempotency keys live for their own TTL (24 h by default), not the retention's.
        await self.store.prune_idempotency(time.time() - self.settings.idempotency_ttl_seconds)
        return self.settings.prune_interval_seconds
