"""The task engine: queued -> submitted -> succeeded | failed | timed_out.

A task is written to the store before anything is sent. A worker owned by the app's lifespan
claims due tasks from the store (each under a lease), so after a restart every unfinished
task resumes: queued ones are submitted, submitted ones are polled. Every transition is a
conditional update of the task's status, so it happens once however many paths race for it
(a callback and a poll, a callback that beats the submit response, a provider's retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any

import httpx
import orjson

from hub.access.tokens import Signer
from hub.config.settings import Settings
from hub.enums import ACTIVE, TaskStatus
from hub.metrics import Metrics
from hub.net.backoff import backoff
from hub.net.fetch import FetchError
from hub.providers.base import (
    ErrorCode,
    Outcome,
    Provider,
    ProviderConfig,
    ProviderError,
    Resend,
)
from hub.store.base import Blob, Delivery, NewEvent, Store, TaskRecord
from hub.store.costs import BILLED
from hub.tasks.billing import Billing, provider_cost
from hub.tasks.io import TaskIO, outcome_from_json, outcome_to_json
from hub.tasks.limits import Limiter
from hub.tasks.view import TaskView

log = logging.getLogger("hub.tasks")

QUEUED = frozenset({TaskStatus.QUEUED})
SUBMITTED = frozenset({TaskStatus.SUBMITTED})


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
        # How long a claimed task is held before another worker may take it (its worker
        # died mid-call): the longest provider call, and a margin.
        longest = max((c.request_timeout for c in configs.values()), default=60.0)
        self._lease = longest + settings.task_lease_margin_seconds
        self._limiters = {
            name: Limiter(config.requests_per_minute, config.concurrency)
            for name, config in configs.items()
        }
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        # Work under way, and the id of the task each is for.
        self._inflight: dict[asyncio.Task[None], str] = {}
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # With SQLite one process owns the store, so any lease left is from a worker that
        # died; with PostgreSQL this does nothing (other replicas' leases are live).
        await self._store.release_leases()
        self._loop_task = asyncio.create_task(self._run(), name="hub-task-worker")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, give running work ``grace`` seconds, then cancel it; cancelled
        work is resumed from the store on the next start."""
        self._stopping = True
        self._wake.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=grace)
            stopped = [self._inflight[task] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # Their leases would hold them for minutes: let another worker (another
            # replica) take them now. A submit cut short keeps its next_at, so it is not
            # sent again before a lost answer could have come.
            if stopped:
                try:
                    await self._store.release_leases(stopped)
                except Exception:
                    log.warning(
                        "releasing %d stopped tasks failed; their leases will expire", len(stopped)
                    )

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
    ) -> TaskRecord:
        """Write the task (queued) and wake the worker. ``task_id``: one made beforehand
        with ``new_id`` (to set up what must exist before the task can end)."""
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
        )
        # The estimate is reserved in the task's own transaction (402 if over budget).
        charge = self.billing.charge(owner, provider, data, now)
        await self._store.create_task(task, self.view.event(task), charge)
        self.wake()
        return task

    # -- the worker ------------------------------------------------------------------------

    async def _run(self) -> None:
        limit = self._settings.worker_concurrency
        while not self._stopping:
            self._wake.clear()
            free = limit - len(self._inflight)
            if free > 0:
                try:
                    claimed = await self._store.claim_tasks(time.time(), self._lease, free)
                except Exception:
                    log.exception("claiming tasks failed; will retry")
                    claimed = []
                for task in claimed:
                    self._spawn(self._work(task), task.id)
            await self._sleep(free > 0)

    async def _sleep(self, can_claim: bool) -> None:
        delay = 1.0
        if can_claim:
            due = await self._store.next_due()
            if due is not None:
                delay = min(delay, max(0.0, due - time.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    def _spawn(self, coro: Coroutine[Any, Any, None], task_id: str) -> None:
        task = asyncio.create_task(coro, name=f"hub-task-{task_id}")
        self._inflight[task] = task_id
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._wake.set()  # a slot is free

    async def _work(self, task: TaskRecord) -> None:
        try:
            if time.time() >= task.deadline:
                await self._end(task, TaskStatus.TIMED_OUT, self._timeout_message())
            elif task.result is not None:
                await self._finish(task, outcome_from_json(task.result))
            elif task.status == TaskStatus.QUEUED:
                await self._submit(task)
            else:
                await self._poll(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s: unexpected error; will look again", task.id)
            await self._later(task, 5.0)

    # -- steps -----------------------------------------------------------------------------

    async def _submit(self, task: TaskRecord) -> None:
        provider = self.providers[task.provider]
        config = self._configs[task.provider]
        attempts = task.attempts + 1
        request = await self._io.edit_request(task, provider)
        try:
            async with self._limiters[task.provider].slot():
                # Counted once the provider's slot is ours and before the request goes out,
                # so a crash cannot hide it. The lease keeps other workers off while this
                # one is alive; a restart (or, with replicas, the lease's end) makes the
                # task due again at once: it stays due, only leased.
                until = time.time() + self._lease
                counted = {"attempts": attempts, "lease_until": until}
                if await self._store.update_task(task.id, ACTIVE, counted) is None:
                    return
                with self._timing(task.provider, "submit"):
                    async with asyncio.timeout(config.request_timeout):
                        outcome = await provider.submit(request)
        except (ProviderError, TimeoutError) as exc:
            error = _provider_error(task.provider, exc)
            if error.retryable and attempts < self._settings.task_max_attempts:
                delay = backoff(attempts, error.retry_after)
                log.info(
                    "task %s: submit attempt %d failed (%s); retry in %.1fs",
                    task.id,
                    attempts,
                    error.message,
                    delay,
                )
                await self._later(task, delay)
            else:
                suffix = f" (after {attempts} attempts)" if error.retryable else ""
                # An unknown outcome may have been billed: its estimate stays spent.
                billed = error.resend is Resend.UNKNOWN
                await self._end(task, TaskStatus.FAILED, error.message + suffix, billed=billed)
            return
        if outcome.state != "pending":
            await self._finish(task, outcome)
            return
        changes: dict[str, object] = {
            "status": TaskStatus.SUBMITTED,
            "provider_task_id": outcome.provider_task_id,
            "next_at": min(time.time() + config.first_poll_after, task.deadline),
        }
        submitted = _replace(
            task, status=TaskStatus.SUBMITTED, provider_task_id=outcome.provider_task_id
        )
        if (
            await self._store.update_task(
                task.id,
                QUEUED,
                changes,
                [self.view.event(submitted)],
            )
            is None
        ):
            # A callback got here first (it can beat the submit response): keep the id.
            await self._store.update_task(
                task.id, SUBMITTED, {"provider_task_id": outcome.provider_task_id}
            )

    async def _poll(self, task: TaskRecord) -> None:
        config = self._configs[task.provider]
        if task.provider_task_id is None:
            await self._end(task, TaskStatus.FAILED, "the provider gave no task id to follow")
            return
        try:
            async with self._limiters[task.provider].slot():
                with self._timing(task.provider, "poll"):
                    async with asyncio.timeout(config.request_timeout):
                        outcome = await self.providers[task.provider].poll(task.provider_task_id)
        except (ProviderError, TimeoutError) as exc:
            error = _provider_error(task.provider, exc)
            if not error.retryable:
                await self._end(task, TaskStatus.FAILED, error.message)
                return
            await self._later(task, max(config.poll_interval, error.retry_after or 0.0))
            return
        if outcome.state == "pending":
            await self._later(task, config.poll_interval)
        else:
            await self._finish(task, outcome)

    async def _finish(self, task: TaskRecord, outcome: Outcome) -> None:
        """Apply a terminal outcome: store its images and end the task, once."""
        if outcome.state == "failed":
            await self._end(task, TaskStatus.FAILED, _reason(task.provider, outcome.error))
            return
        try:
            stored = await self._io.store_outputs(task, outcome.outputs)
        except FetchError as exc:
            # Keep the outcome and try the download again, until the deadline.
            log.info("task %s: fetching outputs failed: %s", task.id, exc)
            changes = {
                "result": outcome_to_json(outcome),
                "next_at": min(time.time() + 5.0, task.deadline),
            }
            await self._store.update_task(task.id, ACTIVE, changes)
            return
        if not stored:
            await self._end(task, TaskStatus.FAILED, f"{task.provider} returned no image")
            return
        await self._succeed(task, outcome, stored)

    async def _succeed(self, task: TaskRecord, outcome: Outcome, stored: list[Blob]) -> None:
        provider_task_id = task.provider_task_id or outcome.provider_task_id
        changes, steps = self._success_change(task, provider_task_id, stored)
        changes.update(provider_cost(outcome))
        await self._store.update_task(task.id, ACTIVE, changes, steps, stored)

    async def _end(
        self, task: TaskRecord, status: TaskStatus, error: str, *, billed: bool = False
    ) -> None:
        ended = _replace(task, status=status, error=error)
        changes: dict[str, object] = {
            "status": status, "error": error, "result": None, "next_at": None
        }  # fmt: skip
        if billed:
            changes[BILLED] = True
        if (
            await self._store.update_task(
                task.id, ACTIVE, changes, self._transition_events(task, ended)
            )
            is not None
        ):
            log.info("task %s %s: %s", task.id, status, error)

    async def _later(self, task: TaskRecord, delay: float) -> None:
        next_at = min(time.time() + delay, task.deadline)
        await self._store.update_task(task.id, ACTIVE, {"next_at": next_at})

    def _transition_events(self, before: TaskRecord, after: TaskRecord) -> list[NewEvent]:
        # A task that ends straight from queued (a synchronous provider, or a callback that
        # beat the submit response) was still submitted: say so, so every stream reads the same.
        steps = []
        if before.status == TaskStatus.QUEUED and after.status == TaskStatus.SUCCEEDED:
            steps.append(
                self.view.event(_replace(after, status=TaskStatus.SUBMITTED, outputs=b"[]"))
            )
        steps.append(self.view.event(after))
        return steps

    # -- callbacks -------------------------------------------------------------------------

    async def apply_callback(self, task_id: str, outcome: Outcome, delivery: Delivery) -> bool:
        """Apply a verified callback in one transaction with its raw delivery. False if it
        changed nothing: a byte-identical retry, a task already ended, a progress note."""
        for _ in range(3):
            task = await self._store.get_task(task_id)
            if task is None:
                return False
            if task.terminal or outcome.state == "pending":
                await self._store.add_delivery(delivery)
                return False
            change = self._callback_change(task, outcome)
            applied = await self._store.update_task(
                task.id, frozenset({task.status}), *change, delivery=delivery
            )
            if applied is not None:
                self.wake()
                return True
            again = await self._store.get_task(task_id)
            if again is None or again.status == task.status:
                return False  # same status, so the delivery was a retry of one applied
        return False

    def _callback_change(
        self, task: TaskRecord, outcome: Outcome
    ) -> tuple[dict[str, object], list[NewEvent], list[Blob]]:
        if outcome.state == "failed":
            error = _reason(task.provider, outcome.error)
            ended = _replace(task, status=TaskStatus.FAILED, error=error)
            changes: dict[str, object] = {
                "status": TaskStatus.FAILED,
                "error": error,
                "next_at": None,
            }
            return changes, self._transition_events(task, ended), []
        provider_task_id = task.provider_task_id or outcome.provider_task_id
        if outcome.outputs and all(output.data is not None for output in outcome.outputs):
            stored = self._io.decoded(task, outcome.outputs)
            changes, steps = self._success_change(task, provider_task_id, stored)
            changes.update(provider_cost(outcome))
            return changes, steps, stored
        # Outputs to download: keep the outcome; the worker fetches them at once.
        changes = {"result": outcome_to_json(outcome), "next_at": time.time()}
        if task.status != TaskStatus.QUEUED:
            return changes, [], []
        changes.update(status=TaskStatus.SUBMITTED, provider_task_id=provider_task_id)
        submitted = _replace(task, status=TaskStatus.SUBMITTED, provider_task_id=provider_task_id)
        return changes, [self.view.event(submitted)], []

    def _success_change(
        self, task: TaskRecord, provider_task_id: str | None, stored: list[Blob]
    ) -> tuple[dict[str, object], list[NewEvent]]:
        outputs = orjson.dumps([{"blob_id": b.id, "content_type": b.content_type} for b in stored])
        done = _replace(
            task, status=TaskStatus.SUCCEEDED, provider_task_id=provider_task_id, outputs=outputs
        )
        changes: dict[str, object] = {
            "status": TaskStatus.SUCCEEDED,
            "provider_task_id": provider_task_id,
            "outputs": outputs,
            "result": None,
            "next_at": None,
        }
        return changes, self._transition_events(task, done)

    # -- helpers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _timing(self, provider: str, call: str) -> Iterator[None]:
        """Time one provider call (not the wait for a slot) into the latency histogram."""
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            if self._metrics is not None:
                elapsed = time.perf_counter() - started
                self._metrics.provider_seconds.labels(provider, call, outcome).observe(elapsed)

    def _timeout_message(self) -> str:
        return f"no result within {self._settings.task_timeout_seconds} s"


def new_id() -> str:
    return "task_" + secrets.token_hex(12)


def _reason(provider: str, error: str | None) -> str:
    """A failure as the task reports it: always naming the provider it came from."""
    if not error:
        return f"{provider}: the job failed (no reason given)"
    return error if error.startswith(f"{provider}:") else f"{provider}: {error}"


def _provider_error(provider: str, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(
        f"{provider} did not answer in time",
        resend=Resend.SAFE,
        code=ErrorCode.PROVIDER_UNAVAILABLE,
    )


def _replace(task: TaskRecord, **changes: Any) -> TaskRecord:
    return dataclasses.replace(task, **changes)
