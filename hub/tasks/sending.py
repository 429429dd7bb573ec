"""Sending a task's job to its provider, at most once per bill.

Money: every job a provider accepts is billed, so a task is sent at most once unless the
provider's answer proves it was not accepted (``Resend.SAFE``). Before the call, a "sending"
marker is committed on the task (with the provider's slot, counted across replicas); the
answer clears it. A task found with the marker and no answer (a crash, a stop, a lease
taken over) or whose answer was lost (``Resend.UNKNOWN``) is never sent again: it waits for
the provider's callback where it was given one, or looks the job up by the handle the
failure left, and otherwise fails with ``outcome_unknown``. A task with fallbacks moves to
the next provider only on a failure that proves nothing was billed (``hub.tasks.routing``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping

from hub.enums import TaskStatus
from hub.net.backoff import backoff
from hub.providers.base import ErrorCode, Outcome, ProviderError, Resend
from hub.store.base import CallLimits, Slot, TaskRecord
from hub.store.costs import REROUTED
from hub.tasks import routing
from hub.tasks.billing import Billing
from hub.tasks.results import QUEUED, SUBMITTED, Part, Results, Shared, replaced
from hub.tasks.shapes import TaskError

log = logging.getLogger("hub.tasks")

# How often a task waiting for one of its provider's slots looks again (slots free when
# any replica's job ends, so there is nothing local to wait on).
SLOT_RECHECK = 1.0
# The provider said its slots are full (no Retry-After): look again after this.
SLOT_FULL_WAIT = 5.0
_jitter = random.Random()


class Sender(Part):
    def __init__(
        self,
        shared: Shared,
        limits: Mapping[str, CallLimits],
        billing: Billing,
        results: Results,
    ) -> None:
        super().__init__(shared)
        self._limits = limits
        self._billing = billing
        self._results = results
        self._lease = shared.settings.task_lease_seconds

    async def submit(self, task: TaskRecord) -> None:
        name = task.provider
        if name not in self.providers:
            # Named in the task's route, not configured on this hub: nothing was sent.
            failure = TaskError(
                ErrorCode.PROVIDER_REFUSED,
                f"{name}: not configured on this hub (HUB_{name.upper()}_API_KEY is not set)",
            )
            if not await self._move_on(task, routing.Moved.NOT_CONFIGURED, failure):
                await self._results.end(task, TaskStatus.FAILED, failure)
            return
        provider, config = self.providers[name], self._configs[name]
        try:
            request = await self._io.edit_request(task, provider)
        except ProviderError as exc:  # an input image is gone: nothing was sent
            await self._results.end(task, TaskStatus.FAILED, TaskError(exc.code, exc.message))
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
        sending = replaced(task, sending_at=now, attempts=attempt)
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
            await self._results.finish(task, outcome)
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
        submitted = replaced(
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
                    await self._results.end(task, TaskStatus.FAILED, exhausted)
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
                await self._results.end(task, TaskStatus.FAILED, failure)
        else:
            await self.unknown(task, error)

    def _impatient(self, task: TaskRecord, retry_at: float) -> bool:
        """Whether waiting for ``retry_at`` outlasts the task's patience with its provider."""
        since = task.provider_since or task.created_at
        return retry_at - since > self._settings.task_patience_seconds

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
        estimate = self._billing.estimate_route(
            routing.runnable(self.providers, [to, *rest]), task.input
        )
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
        self._wake()
        return True

    async def unknown(self, task: TaskRecord, error: ProviderError | None) -> None:
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
            await self._results.end(
                task, TaskStatus.FAILED, TaskError(ErrorCode.OUTCOME_UNKNOWN, message)
            )
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
        await self._results.finish(task, outcome)
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
