"""The task engine: queued -> submitted -> succeeded | failed | timed_out.

A task is written to the store before anything is sent. A worker owned by the app's lifespan
claims due tasks from the store (each under a short lease that it renews while it works), so
after a restart every unfinished task resumes: queued ones are submitted, submitted ones are
polled. Every transition is a conditional update of the task's status, so it happens once
however many paths race for it (a callback and a poll, a callback that beats the submit
response, a provider's retries).

Money: every job a provider accepts is billed, so a task is sent at most once unless the
provider's answer proves it was not accepted (``Resend.SAFE``). Before the call, a "sending"
marker is committed on the task; the answer clears it. A task found with the marker and no
answer (a crash, a stop, a lease taken over) or whose answer was lost (``Resend.UNKNOWN``)
is never sent again: it waits for the provider's callback where it was given one, and
otherwise fails with ``outcome_unknown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from typing import Any

import httpx

from hub.access.tokens import Signer
from hub.background.loops import Health, forever
from hub.config.settings import Settings
from hub.enums import ACTIVE, TaskStatus
from hub.errors import Invalid
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
from hub.store.base import (
    Blob,
    CallLimits,
    Delivery,
    IdempotencyClaim,
    NewEvent,
    Slot,
    Store,
    TaskRecord,
)
from hub.store.costs import REROUTED
from hub.tasks import routing
from hub.tasks.billing import Billing, provider_cost, reported_usd
from hub.tasks.io import Held, Result, TaskIO, asked_n
from hub.tasks.shapes import TaskError
from hub.tasks.view import TaskView

log = logging.getLogger("hub.tasks")

QUEUED = frozenset({TaskStatus.QUEUED})
SUBMITTED = frozenset({TaskStatus.SUBMITTED})
# How often a task waiting for one of its provider's slots looks again (slots free when
# any replica's job ends, so there is nothing local to wait on).
SLOT_RECHECK = 1.0
# The provider said its slots are full (no Retry-After): look again after this.
SLOT_FULL_WAIT = 5.0
RATE_MARGIN = 0.05
MIN_RATE_MARGIN = 0.5  # seconds
_jitter = random.Random()


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
        charge = self.billing.charge(owner, self._runnable([provider, *fallbacks]), data, now)
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
                await self._unknown(task, None)
            elif time.time() >= task.deadline:
                await self._past_deadline(task)
            elif task.result is not None:
                await self._settle_result(task)
            elif task.status == TaskStatus.QUEUED:
                await self._submit(task)
            else:
                await self._poll(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s: unexpected error; will look again", task.id)
            try:
                await self._later(task, 5.0)
            except Exception:
                log.exception("task %s: could not reschedule; its lease will end", task.id)

    # -- submitting ------------------------------------------------------------------------

    async def _submit(self, task: TaskRecord) -> None:
        name = task.provider
        if name not in self.providers:
            # Named in the task's route, not configured on this hub: nothing was sent.
            failure = TaskError(
                ErrorCode.PROVIDER_REFUSED,
                f"{name}: not configured on this hub (HUB_{name.upper()}_API_KEY is not set)",
            )
            if not await self._move_on(task, routing.Moved.NOT_CONFIGURED, failure):
                await self._end(task, TaskStatus.FAILED, failure)
            return
        provider, config = self.providers[name], self._configs[name]
        try:
            request = await self._io.edit_request(task, provider)
        except ProviderError as exc:  # an input image is gone: nothing was sent
            await self._end(task, TaskStatus.FAILED, TaskError(exc.code, exc.message))
            return
        now = time.time()
        attempt = task.attempts + 1
        # The marker, the attempt and the slot, committed together before anything is
        # sent: from here a crash leaves a task that is never sent again.
        marker = {
            "sending_at": now,
            "attempts": attempt,
            "lease_until": now + self._lease,
            "retry_at": None,
        }
        slot = await self._store.take_slot(task.id, self._limits[name], None, marker)
        if not slot.taken:
            if slot.reason != "gone":
                await self._wait_for_slot(task, slot)
            return
        sending = _replace(task, sending_at=now, attempts=attempt)
        error: ProviderError
        try:
            with self._timing(name, "submit"):
                async with asyncio.timeout(config.request_timeout):
                    outcome = await provider.submit(request)
        except TimeoutError:
            error = ProviderError(
                f"{name}: no answer within {config.request_timeout:g} s of sending the job",
                resend=Resend.UNKNOWN,
                code=ErrorCode.OUTCOME_UNKNOWN,
            )
        except ProviderError as exc:
            error = exc
        except Exception as exc:
            log.exception("task %s: reading %s's answer failed", task.id, name)
            error = ProviderError(
                f"{name}: its answer could not be read ({type(exc).__name__})",
                resend=Resend.UNKNOWN,
                code=ErrorCode.OUTCOME_UNKNOWN,
            )
        else:
            await self._accepted(sending, outcome)
            return
        await self._submit_failed(sending, error)

    async def _accepted(self, task: TaskRecord, outcome: Outcome) -> None:
        if outcome.state != "pending":
            await self._finish(task, outcome)
            return
        now = time.time()
        config = self._configs[task.provider]
        changes: dict[str, object] = {
            "status": TaskStatus.SUBMITTED,
            "provider_task_id": outcome.provider_task_id,
            "next_at": min(now + config.first_poll_after, task.deadline),
            "sending_at": None,
            "submitted_at": now,
        }
        submitted = _replace(
            task, status=TaskStatus.SUBMITTED, provider_task_id=outcome.provider_task_id
        )
        events = [self.view.event(submitted)]
        if await self._store.update_task(task.id, QUEUED, changes, events) is not None:
            return
        # A callback got here first (it can beat the submit response): keep the id.
        await self._store.update_task(
            task.id, SUBMITTED, {"provider_task_id": outcome.provider_task_id, "submitted_at": now}
        )

    async def _submit_failed(self, task: TaskRecord, error: ProviderError) -> None:
        """``task``: as sent (its marker set, this attempt counted)."""
        failure = TaskError(error.code, error.message)
        now = time.time()
        why = routing.reason_to_move(error)
        if error.slot_full or error.resend is Resend.SAFE:
            if error.slot_full:
                # Its account has too many jobs unfinished: nothing was accepted, and
                # waiting for one to end spends no attempt.
                attempts = task.attempts - 1
                delay = error.retry_after or SLOT_FULL_WAIT * _jitter.uniform(0.8, 1.2)
            elif task.attempts < self._settings.task_max_attempts:
                attempts = task.attempts
                delay = backoff(task.attempts, error.retry_after)
            else:
                message = f"{error.message} (after {task.attempts} attempts)"
                exhausted = TaskError(error.code, message)
                if not await self._move_on(task, why or routing.Moved.UNAVAILABLE, exhausted):
                    await self._end(task, TaskStatus.FAILED, exhausted)
                return
            # Down, or refusing: the next provider now. Rate-limited: once the wait
            # would outlast the task's patience with this provider.
            moving = why is not None and (
                why is not routing.Moved.RATE_LIMITED or self._impatient(task, now + delay)
            )
            if moving and why is not None and await self._move_on(task, why, failure):
                return
            log.info("task %s: attempt %d: %s; again in %.1fs", task.id, task.attempts,
                     error.message, delay)  # fmt: skip
            retry_at = min(now + delay, task.deadline)
            changes = {
                "sending_at": None,
                "attempts": attempts,
                "next_at": retry_at,
                "retry_at": retry_at,
                "last_error_code": failure.code,
                "last_error": failure.message,
            }
            event = self.view.retrying(task, task.attempts, failure, retry_at)
            await self._store.update_task(task.id, QUEUED, changes, [event])
        elif error.resend is Resend.NEVER:
            if why is None or not await self._move_on(task, why, failure):
                await self._end(task, TaskStatus.FAILED, failure)
        else:
            await self._unknown(task, error)

    def _impatient(self, task: TaskRecord, retry_at: float) -> bool:
        """Whether waiting for ``retry_at`` outlasts the task's patience with its provider."""
        since = task.provider_since or task.created_at
        return retry_at - since > self._settings.task_patience_seconds

    def _runnable(self, providers: list[str]) -> list[str]:
        """Those of ``providers`` configured here (all of them if none is)."""
        return [name for name in providers if name in self.providers] or providers

    async def _move_on(self, task: TaskRecord, why: routing.Moved, error: TaskError) -> bool:
        """Move the task to the next provider on its route, if it has one: only ever for a
        failure that proves the current one did not bill it (``routing.reason_to_move``).
        False when there is none to move to."""
        rest = routing.fallbacks(task)
        if not rest:
            return False
        now = time.time()
        to, rest = rest[0], rest[1:]
        route = [*routing.steps(task), routing.left(task, why, error)]
        # The reservation made for the dearest on the route, now for the ones left.
        estimate = self.billing.estimate_route(self._runnable([to, *rest]), task.input)
        changes: dict[str, object] = {
            "provider": to,
            "fallbacks": routing.encode(rest),
            "route": routing.encode(route),
            "provider_since": now,
            "provider_task_id": None,
            "attempts": 0,
            "sending_at": None,
            "next_at": now,
            "retry_at": None,
            "last_error_code": error.code,
            "last_error": error.message,
            REROUTED: (to, estimate),
        }
        event = self.view.rerouted(task, to, why, error)
        if await self._store.update_task(task.id, QUEUED, changes, [event]) is None:
            return True  # it changed meanwhile (canceled): nothing more to do here
        log.info("task %s: %s -> %s (%s): %s", task.id, task.provider, to, why, error.message)
        self.wake()
        return True

    async def _unknown(self, task: TaskRecord, error: ProviderError | None) -> None:
        """A send whose outcome is unknown: never sent again. Wait for the provider's
        callback where it was given one, and look the job up where the failure left a
        handle to find it by (AceData's trace id), until the grace or the deadline ends;
        else fail saying it may have been charged."""
        name, config = task.provider, self._configs[task.provider]
        if error is not None:
            cause = error.message
        elif task.last_error_code == ErrorCode.OUTCOME_UNKNOWN and task.last_error:
            cause = task.last_error
        else:
            cause = f"{name}: the hub stopped before {name}'s answer to the job was recorded"
        handle = error.provider_task_id if error is not None else task.provider_task_id
        sent = task.sending_at or time.time()
        until = min(sent + self._settings.task_unknown_grace_seconds, task.deadline)
        findable = handle is not None or self._io.callback_wanted(self.providers[name])
        if not findable or time.time() >= until:
            message = (
                f"{cause}. The outcome is unknown: {name} may have charged for the job, so"
                " the hub did not send it again"
            )
            await self._end(task, TaskStatus.FAILED, TaskError(ErrorCode.OUTCOME_UNKNOWN, message))
            return
        if error is None and handle is not None and await self._look_up(task, handle):
            return
        log.info("task %s: %s; waiting for %s's answer without sending again", task.id, cause, name)
        changes: dict[str, object] = {
            "next_at": until if handle is None else min(time.time() + config.poll_interval, until),
            "retry_at": None,
            "last_error_code": ErrorCode.OUTCOME_UNKNOWN,
            "last_error": cause,
        }
        if handle is not None:
            changes["provider_task_id"] = handle
        await self._store.update_task(task.id, QUEUED, changes)

    async def _look_up(self, task: TaskRecord, handle: str) -> bool:
        """Ask the provider once about a job whose submit went unanswered; True if that
        ended the task (the job was found finished)."""
        name, config = task.provider, self._configs[task.provider]
        age = time.time() - (task.sending_at or task.created_at)
        try:
            async with asyncio.timeout(config.request_timeout):
                outcome = await self.providers[name].poll(handle, age=age)
        except (ProviderError, TimeoutError) as exc:
            log.info("task %s: looking up %s's job failed: %s", task.id, name, exc)
            return False
        if outcome.state == "pending":
            return False
        await self._finish(task, outcome)
        return True

    async def _wait_for_slot(self, task: TaskRecord, slot: Slot) -> None:
        """The provider's account is at its limit (jobs unfinished, or jobs sent in the
        window, counted across replicas): wait, spending no attempt. Said once per wait."""
        name, limits = task.provider, self._limits[task.provider]
        now = time.time()
        if slot.reason == "concurrency":
            retry_at = now + SLOT_RECHECK * _jitter.uniform(0.8, 1.2)
            message = (
                f"{name}: {limits.concurrency} jobs unfinished, the most it takes at once;"
                " waiting for one to end"
            )
        else:
            retry_at = max(now, slot.retry_at or now) + _jitter.uniform(0.0, 0.05)
            message = (
                f"{name}: {limits.per_window} jobs sent in"
                f" {self._settings.provider_rate_window_seconds:g} s, the most it"
                " takes; waiting for a free one"
            )
        retry_at = min(retry_at, task.deadline)
        failure = TaskError(ErrorCode.RATE_LIMITED, message)
        if self._impatient(task, retry_at) and await self._move_on(
            task, routing.Moved.RATE_LIMITED, failure
        ):
            return
        changes = {
            "next_at": retry_at,
            "retry_at": retry_at,
            "last_error_code": failure.code,
            "last_error": failure.message,
        }
        same = task.last_error_code == failure.code and task.last_error == failure.message
        events = [] if same else [self.view.retrying(task, task.attempts + 1, failure, retry_at)]
        await self._store.update_task(task.id, QUEUED, changes, events)

    # -- polling and results ---------------------------------------------------------------

    async def _poll(self, task: TaskRecord) -> None:
        name, config = task.provider, self._configs[task.provider]
        if task.provider_task_id is None:
            failure = TaskError(ErrorCode.PROVIDER_FAILED, f"{name} gave no task id to follow")
            await self._end(task, TaskStatus.FAILED, failure)
            return
        # Status reads are not counted in the provider's rate: it limits the calls that
        # make jobs (the emulators too), and a read refused with a 429 is only read later.
        age = time.time() - (task.submitted_at or task.created_at)
        try:
            with self._timing(name, "poll"):
                async with asyncio.timeout(config.request_timeout):
                    outcome = await self.providers[name].poll(task.provider_task_id, age=age)
        except (ProviderError, TimeoutError) as exc:
            # A status read is free: anything but a final refusal is read again later.
            error = exc if isinstance(exc, ProviderError) else _poll_timeout(name, config)
            if error.resend is Resend.NEVER and not error.slot_full:
                await self._end(task, TaskStatus.FAILED, TaskError(error.code, error.message))
                return
            delay = max(config.poll_interval, error.retry_after or 0.0)
            await self._later(task, delay, last_error_code=error.code, last_error=error.message)
            return
        if outcome.state == "pending":
            await self._later(task, config.poll_interval)
        else:
            await self._finish(task, outcome)

    async def _finish(self, task: TaskRecord, outcome: Outcome) -> None:
        """Apply a terminal outcome from a submit or a poll: hold its images, in order,
        and end the task, once."""
        if outcome.state == "failed":
            failure = TaskError(outcome.error_code, _reason(task.provider, outcome.error))
            await self._end(task, TaskStatus.FAILED, failure)
            return
        held = self._io.hold(task, outcome.outputs)
        cost_usd = reported_usd(outcome)
        if task.result is not None:
            # A short result (a webhook with fewer images than asked) was polled for the
            # whole list: keep whichever holds more.
            before = Result.from_json(task.result)
            if len(before.entries) > len(held.entries):
                held = Held(before.entries)
            cost_usd = before.cost_usd if cost_usd is None else cost_usd
        if not held.entries:
            failure = TaskError(ErrorCode.PROVIDER_FAILED, f"{task.provider} returned no image")
            await self._end(task, TaskStatus.FAILED, failure)
            return
        provider_task_id = task.provider_task_id or outcome.provider_task_id
        await self._complete(task, held, provider_task_id, cost_usd)

    async def _complete(
        self,
        task: TaskRecord,
        held: Held,
        provider_task_id: str | None,
        cost_usd: float | None = None,
    ) -> None:
        """Download what is still a URL and succeed; a download that fails keeps the
        result (and the images already held) and is tried again until the deadline."""
        try:
            fetched = await self._io.fetch(task, held.entries)
        except FetchError as exc:
            log.info("task %s: fetching outputs failed: %s", task.id, exc)
            changes = {
                "result": Result(provider_task_id, held.entries, cost_usd=cost_usd).to_json(),
                "next_at": min(time.time() + 5.0, task.deadline),
                "sending_at": None,
            }
            await self._store.update_task(task.id, ACTIVE, changes, blobs=held.blobs)
            return
        if not fetched.entries:
            failure = TaskError(ErrorCode.PROVIDER_FAILED, f"{task.provider} returned no image")
            await self._end(task, TaskStatus.FAILED, failure)
            return
        blobs = held.blobs + fetched.blobs
        changes, events = self._success_change(task, provider_task_id, fetched)
        changes.update(provider_cost(cost_usd))  # the provider's own figure, where it gave one
        await self._store.update_task(task.id, ACTIVE, changes, events, blobs)

    async def _settle_result(self, task: TaskRecord) -> None:
        result = Result.from_json(task.result or b"{}")
        if result.short and task.provider_task_id is not None:
            await self._poll(task)  # for the whole list; _finish keeps the longer
            return
        await self._complete(task, Held(result.entries), result.provider_task_id, result.cost_usd)

    async def _past_deadline(self, task: TaskRecord) -> None:
        if task.result is not None:
            result = Result.from_json(task.result)
            held = Held(result.entries)
            if result.short and held.complete and held.entries:
                # The whole list never came: what the callback brought is the result.
                changes, events = self._success_change(task, result.provider_task_id, held)
                changes.update(provider_cost(result.cost_usd))
                await self._store.update_task(task.id, ACTIVE, changes, events)
                return
        failure = TaskError(
            ErrorCode.TIMED_OUT, f"no result within {self._settings.task_timeout_seconds} s"
        )
        await self._end(task, TaskStatus.TIMED_OUT, failure)

    async def _end(self, task: TaskRecord, status: TaskStatus, error: TaskError) -> None:
        ended = _replace(task, status=status, error=error.message, error_code=error.code)
        changes = {
            "status": status,
            "error": error.message,
            "error_code": error.code,
            "result": None,
            "next_at": None,
            "sending_at": None,
            "retry_at": None,
        }
        events = self._transition_events(task, ended)
        if await self._store.update_task(task.id, ACTIVE, changes, events) is not None:
            log.info("task %s %s: %s", task.id, status, error.message)

    async def _later(self, task: TaskRecord, delay: float, **changes: object) -> None:
        next_at = min(time.time() + delay, task.deadline)
        await self._store.update_task(task.id, ACTIVE, {"next_at": next_at, **changes})

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
            change = None if task.terminal else self._callback_change(task, outcome)
            if change is None:
                await self._store.add_delivery(delivery)
                return False
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
    ) -> tuple[dict[str, object], list[NewEvent], list[Blob]] | None:
        """What a callback changes (it is an answer: the sending marker goes), or None."""
        provider_task_id = task.provider_task_id or outcome.provider_task_id
        if outcome.state == "pending":
            if task.status != TaskStatus.QUEUED or outcome.provider_task_id is None:
                return None
            # The provider says it has the job (a progress note with its id): it was
            # accepted, so follow it, whatever became of the submit's own answer.
            return self._submitted_change(task, provider_task_id, {"next_at": time.time()})
        if outcome.state == "failed":
            failure = TaskError(outcome.error_code, _reason(task.provider, outcome.error))
            ended = _replace(task, status=TaskStatus.FAILED, error=failure.message,
                             error_code=failure.code)  # fmt: skip
            changes: dict[str, object] = {
                "status": TaskStatus.FAILED,
                "error": failure.message,
                "error_code": failure.code,
                "next_at": None,
                "sending_at": None,
                "retry_at": None,
            }
            return changes, self._transition_events(task, ended), []
        held = self._io.hold(task, outcome.outputs)
        if outcome.outputs and not held.entries:
            # Refused (422), changing nothing: polling then finishes the task.
            raise Invalid("invalid_output", "the callback's images are not PNG, JPEG or WebP")
        # Fewer images than asked (a webhook with the first only): the worker asks the
        # provider for the whole list before the task succeeds.
        short = len(held.entries) < asked_n(task) and provider_task_id is not None
        if held.complete and held.entries and not short:
            changes, events = self._success_change(task, provider_task_id, held)
            changes.update(provider_cost(reported_usd(outcome)))
            return changes, events, held.blobs
        # Outputs to download, or to complete: keep the result; the worker goes on at once.
        result = Result(provider_task_id, held.entries, short, reported_usd(outcome))
        more = {"result": result.to_json(), "next_at": time.time(), "sending_at": None}
        if task.status != TaskStatus.QUEUED:
            return more, [], held.blobs
        changes, events, _ = self._submitted_change(task, provider_task_id, more)
        return changes, events, held.blobs

    def _submitted_change(
        self, task: TaskRecord, provider_task_id: str | None, more: dict[str, object]
    ) -> tuple[dict[str, object], list[NewEvent], list[Blob]]:
        changes: dict[str, object] = {
            "status": TaskStatus.SUBMITTED,
            "provider_task_id": provider_task_id,
            "sending_at": None,
            "retry_at": None,
            "submitted_at": time.time(),
            **more,
        }
        submitted = _replace(task, status=TaskStatus.SUBMITTED, provider_task_id=provider_task_id)
        return changes, [self.view.event(submitted)], []

    def _success_change(
        self, task: TaskRecord, provider_task_id: str | None, held: Held
    ) -> tuple[dict[str, object], list[NewEvent]]:
        outputs = held.outputs_json()
        done = _replace(
            task, status=TaskStatus.SUCCEEDED, provider_task_id=provider_task_id, outputs=outputs
        )
        changes: dict[str, object] = {
            "status": TaskStatus.SUCCEEDED,
            "provider_task_id": provider_task_id,
            "outputs": outputs,
            "result": None,
            "next_at": None,
            "sending_at": None,
            "retry_at": None,
        }
        return changes, self._transition_events(task, done)

    # -- helpers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _timing(self, provider: str, call: str) -> Iterator[None]:
        """Time one provider call into the latency histogram."""
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            if self._metrics is not None:
                elapsed = time.perf_counter() - started
                self._metrics.provider_seconds.labels(provider, call, outcome).observe(elapsed)


def new_id() -> str:
    return "task_" + secrets.token_hex(12)


def _reason(provider: str, error: str | None) -> str:
    """A failure as the task reports it: always naming the provider it came from."""
    if not error:
        return f"{provider}: the job failed (no reason given)"
    return error if error.startswith(f"{provider}:") else f"{provider}: {error}"


def _poll_timeout(provider: str, config: ProviderConfig) -> ProviderError:
    return ProviderError(
        f"{provider}: no answer to a status read within {config.request_timeout:g} s",
        resend=Resend.SAFE,
        code=ErrorCode.PROVIDER_UNAVAILABLE,
    )


def _replace(task: TaskRecord, **changes: Any) -> TaskRecord:
    return dataclasses.replace(task, **changes)
