"""The task engine: queued -> submitted -> succeeded | failed | timed_out.

A task is written to the store before anything is sent. A worker owned by the app's lifespan
claims due tasks from the store (each under a short lease that it renews while it works), so
after a restart every unfinished task resumes: queued ones are submitted, submitted ones are
polled. Every transition is a conditional update of the task's status, so it happens once
however many paths race for it (a callback and a poll, a callback that beats the submit
response, a provider's retries).

Sending (at most once per bill) is ``hub.tasks.sending``; applying what providers answer,
by poll or by callback, and ending tasks is ``hub.tasks.results``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import httpx

from hub.access.tokens import Signer
from hub.background.loops import Health, forever
from hub.config.settings import Settings
from hub.enums import TaskStatus
from hub.metrics import Metrics
from hub.providers.base import (
    Outcome,
    Provider,
    ProviderConfig,
)
from hub.store.base import (
    CallLimits,
    Delivery,
    IdempotencyClaim,
    Store,
    TaskRecord,
)
from hub.tasks import routing
from hub.tasks.billing import Billing
from hub.tasks.io import TaskIO
from hub.tasks.results import Results, Shared, Timing
from hub.tasks.sending import Sender
from hub.tasks.view import TaskView

log = logging.getLogger("hub.tasks")

RATE_MARGIN = 0.05
MIN_RATE_MARGIN = 0.5  # seconds


class TaskEngine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: Signer,
        client: httpx.AsyncClient,
        providers: Mapping[str, Provider],
        configs: Mapping[str, ProviderConfig],
        metrics: Metrics | None = None,
        health: Health | None = None,
        billing: Billing | None = None,
    ) -> None:
        self._settings = settings
        self.billing = billing or Billing(settings, configs)
        self._metrics = metrics
        self._store = store
        self._signer = signer
        self._io = TaskIO(settings, store, signer, client)
        self.view = TaskView(settings.public_url)
        self.providers = providers
        self._configs = configs
        # Short, and renewed every third of it while the worker lives: a dead worker's
        # task is taken over soon, a live one's never.
        self._lease = settings.task_lease_seconds
        # Counted over a little more than the provider's window: a call is counted just
        # before it leaves, and reaches the provider a moment later.
        shown = settings.provider_rate_window_seconds
        window = shown + max(shown * RATE_MARGIN, MIN_RATE_MARGIN)
        self._limits = {
            name: CallLimits(name, config.concurrency, config.requests_per_minute, window)
            for name, config in configs.items()
        }
        shared = Shared(
            settings, store, self._io, self.view, providers, configs, Timing(metrics), self.wake
        )
        self._results = Results(shared)
        self._sender = Sender(shared, self._limits, self.billing, self._results)
        health = health or Health()
        self._worker = health.component("tasks", stuck_after=30.0)
        self._renewer = health.component("task-leases", stuck_after=max(30.0, self._lease * 3))
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        # Work under way, and the id of the task each is for.
        self._inflight: dict[asyncio.Task[None], str] = {}
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # With SQLite one process owns the store, so any lease left is from a worker that
        # died; with PostgreSQL this does nothing (other replicas' leases are live).
        await self._store.release_leases()
        for component, step in ((self._worker, self._step), (self._renewer, self._renew)):
            task = asyncio.create_task(forever(component, step), name=f"hub-{component.name}")
            component.task = task
            self._loops.append(task)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, give running work ``grace`` seconds, then cancel it; cancelled
        work is resumed from the store on the next start (a send cut short is never sent
        again: its marker says so)."""
        self._stopping = True
        self._wake.set()
        worker = self._loops[:1]
        for task in worker:
            task.cancel()
        await asyncio.gather(*worker, return_exceptions=True)
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=grace)
            stopped = [self._inflight[task] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # Let another worker (another replica) take them now, not when the lease ends.
            if stopped:
                try:
                    await self._store.release_leases(stopped)
                except Exception:
                    log.warning(
                        "releasing %d stopped tasks failed; their leases will expire", len(stopped)
                    )
        for task in self._loops[1:]:
            task.cancel()
        await asyncio.gather(*self._loops[1:], return_exceptions=True)
        self._loops = []

    def wake(self) -> None:
        self._wake.set()

    # -- creating --------------------------------------------------------------------------

    async def create(
        self,
        owner: str,
        provider: str,
        channel_id: str | None,
        data: bytes,
        task_id: str | None = None,
        claim: IdempotencyClaim | None = None,
        fallbacks: Sequence[str] = (),
    ) -> TaskRecord:
        """Write the task (queued) and wake the worker. ``task_id``: one made beforehand
        with ``new_id`` (to set up what must exist before the task can end). ``claim``: an
        idempotency key this request holds, bound to the task in the same transaction
        (``Conflict`` and no task if the claim was lost). ``fallbacks``: the providers to
        move to, in order, if ``provider`` certainly cannot take the job."""
        now = time.time()
        task = TaskRecord(
            id=task_id or new_id(),
            owner=owner,
            provider=provider,
            status=TaskStatus.QUEUED,
            input=data,
            channel_id=channel_id,
            provider_task_id=None,
            callback_secret=secrets.token_hex(24),
            outputs=b"[]",
            result=None,
            error=None,
            attempts=0,
            next_at=now,
            deadline=now + self._settings.task_timeout_seconds,
            created_at=now,
            updated_at=now,
            fallbacks=routing.encode(list(fallbacks)),
            provider_since=now,
        )
        # The estimate is reserved in the task's own transaction (402 if over budget).
        runnable = routing.runnable(self.providers, [provider, *fallbacks])
        charge = self.billing.charge(owner, runnable, data, now)
        await self._store.create_task(task, self.view.event(task), claim, charge)
        self.wake()
        return task

    # -- the worker ------------------------------------------------------------------------

    async def _step(self) -> float:
        """One round: claim what is due and free to work, then wait for the next. A store
        error ends the round, not the worker (``forever`` logs it and tries again)."""
        self._wake.clear()
        free = self._settings.worker_concurrency - len(self._inflight)
        if free > 0 and not self._stopping:
            claimed = await self._store.claim_tasks(time.time(), self._lease, free)
            for task in claimed:
                self._spawn(self._work(task), task.id)
        await self._sleep(free > 0)
        return 0.0

    async def _sleep(self, can_claim: bool) -> None:
        delay = 1.0
        if can_claim:
            due = await self._store.next_due()
            if due is not None:
                delay = min(delay, max(0.0, due - time.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    async def _renew(self) -> float:
        """Keep the leases of the work under way, so nobody takes over a live worker's
        task however long its provider call lasts."""
        working = set(self._inflight.values())
        if working:
            now = time.time()
            await self._store.renew_leases(working, now, now + self._lease)
        return self._lease / 3

    def _spawn(self, coro: Coroutine[Any, Any, None], task_id: str) -> None:
        task = asyncio.create_task(coro, name=f"hub-task-{task_id}")
        self._inflight[task] = task_id
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()  # a slot is free

    async def _work(self, task: TaskRecord) -> None:
        try:
            if task.sending_at is not None and task.status == TaskStatus.QUEUED:
                # Sent, and no answer recorded: the job may have been accepted.
                await self._sender.unknown(task, None)
            elif time.time() >= task.deadline:
                await self._results.past_deadline(task)
            elif task.result is not None:
                await self._results.settle_result(task)
            elif task.status == TaskStatus.QUEUED:
                await self._sender.submit(task)
            else:
                await self._results.poll(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s: unexpected error; will look again", task.id)
            try:
                await self._results.later(task, 5.0)
            except Exception:
                log.exception("task %s: could not reschedule; its lease will end", task.id)

    # -- callbacks -------------------------------------------------------------------------

    async def apply_callback(self, task_id: str, outcome: Outcome, delivery: Delivery) -> bool:
        """Apply a verified callback in one transaction with its raw delivery. False if it
        changed nothing: a byte-identical retry, a task already ended, a progress note."""
        return await self._results.apply_callback(task_id, outcome, delivery)


def new_id() -> str:
    return "task_" + secrets.token_hex(12)
