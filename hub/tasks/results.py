"""What providers answer, applied to tasks: polls, callbacks, and how a task ends.

Every transition is a conditional update of the task's status, so it happens once however
many paths race for it (a callback and a poll, a callback that beats the submit response,
a provider's retries). Images are held in the order the provider gave them; a result whose
images are still URLs is kept on the task and fetched until the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from hub.config.settings import Settings
from hub.enums import ACTIVE, TaskStatus
from hub.errors import Invalid
from hub.metrics import Metrics
from hub.net.fetch import FetchError
from hub.providers.base import ErrorCode, Outcome, Provider, ProviderConfig, ProviderError, Resend
from hub.store.base import Blob, Delivery, NewEvent, Store, TaskRecord
from hub.tasks.billing import provider_cost, reported_usd
from hub.tasks.io import Held, Result, TaskIO, asked_n
from hub.tasks.shapes import TaskError
from hub.tasks.view import TaskView

log = logging.getLogger("hub.tasks")

QUEUED = frozenset({TaskStatus.QUEUED})
SUBMITTED = frozenset({TaskStatus.SUBMITTED})


class Timing:
    """Times provider calls into the latency histogram (when there are metrics)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    @contextlib.contextmanager
    def __call__(self, provider: str, call: str) -> Iterator[None]:
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            if self._metrics is not None:
                elapsed = time.perf_counter() - started
                self._metrics.provider_seconds.labels(provider, call, outcome).observe(elapsed)


@dataclasses.dataclass(frozen=True)
class Shared:
    """What the engine's parts share: its settings, store and providers, how a task's
    requests and views are made, the providers' call timer, and the worker's wake-up."""

    settings: Settings
    store: Store
    io: TaskIO
    view: TaskView
    providers: Mapping[str, Provider]
    configs: Mapping[str, ProviderConfig]
    timing: Timing
    wake: Callable[[], None]


class Part:
    """One part of the engine, with what they all share at hand."""

    def __init__(self, shared: Shared) -> None:
        self._settings = shared.settings
        self._store = shared.store
        self._io = shared.io
        self.view = shared.view
        self.providers = shared.providers
        self._configs = shared.configs
        self._timing = shared.timing
        self._wake = shared.wake


class Results(Part):
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
                self._wake()
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
            ended = replaced(task, status=TaskStatus.FAILED, error=failure.message,
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
        submitted = replaced(task, status=TaskStatus.SUBMITTED, provider_task_id=provider_task_id)
        return changes, [self.view.event(submitted)], []

    def _success_change(
        self, task: TaskRecord, provider_task_id: str | None, held: Held
    ) -> tuple[dict[str, object], list[NewEvent]]:
        outputs = held.outputs_json()
        done = replaced(
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

    async def poll(self, task: TaskRecord) -> None:
        name, config = task.provider, self._configs[task.provider]
        if task.provider_task_id is None:
            failure = TaskError(ErrorCode.PROVIDER_FAILED, f"{name} gave no task id to follow")
            await self.end(task, TaskStatus.FAILED, failure)
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
                await self.end(task, TaskStatus.FAILED, TaskError(error.code, error.message))
                return
            delay = max(config.poll_interval, error.retry_after or 0.0)
            await self.later(task, delay, last_error_code=error.code, last_error=error.message)
            return
        if outcome.state == "pending":
            await self.later(task, config.poll_interval)
        else:
            await self.finish(task, outcome)

    async def finish(self, task: TaskRecord, outcome: Outcome) -> None:
        """Apply a terminal outcome from a submit or a poll: hold its images, in order,
        and end the task, once."""
        if outcome.state == "failed":
            failure = TaskError(outcome.error_code, _reason(task.provider, outcome.error))
            await self.end(task, TaskStatus.FAILED, failure)
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
            await self.end(task, TaskStatus.FAILED, failure)
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
            await self.end(task, TaskStatus.FAILED, failure)
            return
        blobs = held.blobs + fetched.blobs
        changes, events = self._success_change(task, provider_task_id, fetched)
        changes.update(provider_cost(cost_usd))  # the provider's own figure, where it gave one
        await self._store.update_task(task.id, ACTIVE, changes, events, blobs)

    async def settle_result(self, task: TaskRecord) -> None:
        result = Result.from_json(task.result or b"{}")
        if result.short and task.provider_task_id is not None:
            await self.poll(task)  # for the whole list; finish keeps the longer
            return
        await self._complete(task, Held(result.entries), result.provider_task_id, result.cost_usd)

    async def past_deadline(self, task: TaskRecord) -> None:
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
        await self.end(task, TaskStatus.TIMED_OUT, failure)

    async def end(self, task: TaskRecord, status: TaskStatus, error: TaskError) -> None:
        ended = replaced(task, status=status, error=error.message, error_code=error.code)
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

    async def later(self, task: TaskRecord, delay: float, **changes: object) -> None:
        next_at = min(time.time() + delay, task.deadline)
        await self._store.update_task(task.id, ACTIVE, {"next_at": next_at, **changes})

    def _transition_events(self, before: TaskRecord, after: TaskRecord) -> list[NewEvent]:
        # A task that ends straight from queued (a synchronous provider, or a callback that
        # beat the submit response) was still submitted: say so, so every stream reads the same.
        steps = []
        if before.status == TaskStatus.QUEUED and after.status == TaskStatus.SUCCEEDED:
            steps.append(
                self.view.event(replaced(after, status=TaskStatus.SUBMITTED, outputs=b"[]"))
            )
        steps.append(self.view.event(after))
        return steps


def replaced(task: TaskRecord, **changes: Any) -> TaskRecord:
    return dataclasses.replace(task, **changes)


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
