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
from collections.abc import Coroutine, Mapping
from typing import Any

import httpx
import orjson

from hub import blobs, events
from hub.fetch import FetchError, fetch
from hub.limits import Limiter, backoff
from hub.providers.base import (
    EditRequest,
    InputImage,
    Outcome,
    Output,
    Provider,
    ProviderConfig,
    ProviderError,
)
from hub.settings import Settings
from hub.signing import CALLBACK, Claims, Signer
from hub.store.base import TERMINAL, Blob, Delivery, NewEvent, Store, TaskRecord

log = logging.getLogger("hub.tasks")

ACTIVE = frozenset({"queued", "submitted"})
# How long a worker holds a claimed task before another may take it (a crash mid-call).
LEASE_MARGIN = 30.0


class TaskEngine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        signer: Signer,
        client: httpx.AsyncClient,
        providers: Mapping[str, Provider],
        configs: Mapping[str, ProviderConfig],
    ) -> None:
        self._settings = settings
        self._store = store
        self._signer = signer
        self._client = client
        self.providers = providers
        self._configs = configs
        self._limiters = {
            name: Limiter(config.requests_per_minute, config.concurrency)
            for name, config in configs.items()
        }
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # One process owns an SQLite store: any lease left is from a worker that died.
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
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    # -- creating --------------------------------------------------------------------------

    async def create(
        self, owner: str, provider: str, channel_id: str | None, data: bytes
    ) -> TaskRecord:
        now = time.time()
        task = TaskRecord(
            id="task_" + secrets.token_hex(12),
            owner=owner,
            provider=provider,
            status="queued",
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
        await self._store.create_task(task, self._event(task, "task.queued"))
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
                    claimed = await self._store.claim_tasks(time.time(), self._lease(), free)
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

    def _lease(self) -> float:
        longest = max((c.request_timeout for c in self._configs.values()), default=60.0)
        return longest + LEASE_MARGIN

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"hub-task-{name}")
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free

    async def _work(self, task: TaskRecord) -> None:
        try:
            if time.time() >= task.deadline:
                await self._end(task, "timed_out", self._timeout_message())
            elif task.result is not None:
                await self._finish(task, _outcome_from_json(task.result))
            elif task.status == "queued":
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
        # The attempt is counted before the request goes out, so a crash cannot hide it.
        until = time.time() + self._lease()
        if (
            await self._store.update_task(task.id, ACTIVE, {"attempts": attempts, "next_at": until})
            is None
        ):
            return
        request = await self._edit_request(task, provider)
        try:
            async with self._limiters[task.provider].slot():
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
                await self._end(task, "failed", error.message + suffix)
            return
        if outcome.state != "pending":
            await self._finish(task, outcome)
            return
        changes: dict[str, object] = {
            "status": "submitted",
            "provider_task_id": outcome.provider_task_id,
            "next_at": min(time.time() + config.first_poll_after, task.deadline),
        }
        submitted = _replace(task, status="submitted", provider_task_id=outcome.provider_task_id)
        if (
            await self._store.update_task(
                task.id, frozenset({"queued"}), changes, [self._event(submitted, "task.submitted")]
            )
            is None
        ):
            # A callback got here first (it can beat the submit response): keep the id.
            await self._store.update_task(
                task.id, frozenset({"submitted"}), {"provider_task_id": outcome.provider_task_id}
            )

    async def _poll(self, task: TaskRecord) -> None:
        config = self._configs[task.provider]
        if task.provider_task_id is None:
            await self._end(task, "failed", "the provider gave no task id to follow")
            return
        try:
            async with self._limiters[task.provider].slot():
                async with asyncio.timeout(config.request_timeout):
                    outcome = await self.providers[task.provider].poll(task.provider_task_id)
        except (ProviderError, TimeoutError) as exc:
            error = _provider_error(task.provider, exc)
            if not error.retryable:
                await self._end(task, "failed", error.message)
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
            await self._end(task, "failed", _reason(task.provider, outcome.error))
            return
        try:
            stored = await self._store_outputs(task, outcome.outputs)
        except FetchError as exc:
            # Keep the outcome and try the download again, until the deadline.
            log.info("task %s: fetching outputs failed: %s", task.id, exc)
            changes = {
                "result": _outcome_to_json(outcome),
                "next_at": min(time.time() + 5.0, task.deadline),
            }
            await self._store.update_task(task.id, ACTIVE, changes)
            return
        if not stored:
            await self._end(task, "failed", f"{task.provider} returned no image")
            return
        await self._succeed(task, outcome, stored)

    async def _succeed(self, task: TaskRecord, outcome: Outcome, stored: list[Blob]) -> None:
        provider_task_id = task.provider_task_id or outcome.provider_task_id
        changes, steps = self._success_change(task, provider_task_id, stored)
        await self._store.update_task(task.id, ACTIVE, changes, steps, stored)

    async def _end(self, task: TaskRecord, status: str, error: str) -> None:
        ended = _replace(task, status=status, error=error)
        changes = {"status": status, "error": error, "result": None, "next_at": None}
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
        if before.status == "queued" and after.status == "succeeded":
            steps.append(
                self._event(_replace(after, status="submitted", outputs=b"[]"), "task.submitted")
            )
        steps.append(self._event(after, f"task.{after.status}"))
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
            ended = _replace(task, status="failed", error=error)
            changes: dict[str, object] = {"status": "failed", "error": error, "next_at": None}
            return changes, self._transition_events(task, ended), []
        provider_task_id = task.provider_task_id or outcome.provider_task_id
        if outcome.outputs and all(output.data is not None for output in outcome.outputs):
            stored = self._decoded_outputs(task, outcome.outputs)
            return (*self._success_change(task, provider_task_id, stored), stored)
        # Outputs to download: keep the outcome; the worker fetches them at once.
        changes = {"result": _outcome_to_json(outcome), "next_at": time.time()}
        if task.status != "queued":
            return changes, [], []
        changes.update(status="submitted", provider_task_id=provider_task_id)
        submitted = _replace(task, status="submitted", provider_task_id=provider_task_id)
        return changes, [self._event(submitted, "task.submitted")], []

    def _success_change(
        self, task: TaskRecord, provider_task_id: str | None, stored: list[Blob]
    ) -> tuple[dict[str, object], list[NewEvent]]:
        outputs = orjson.dumps([{"blob_id": b.id, "content_type": b.content_type} for b in stored])
        done = _replace(
            task, status="succeeded", provider_task_id=provider_task_id, outputs=outputs
        )
        changes: dict[str, object] = {
            "status": "succeeded",
            "provider_task_id": provider_task_id,
            "outputs": outputs,
            "result": None,
            "next_at": None,
        }
        return changes, self._transition_events(task, done)

    # -- helpers ---------------------------------------------------------------------------

    def _event(self, task: TaskRecord, type_: str) -> NewEvent:
        return NewEvent(
            type_, orjson.dumps(self.describe(task, event=True)),
            channel_id=task.channel_id, task_id=task.id, ref=task.id,
        )  # fmt: skip

    def describe(self, task: TaskRecord, *, event: bool = False) -> dict[str, Any]:
        """The task as the API shows it (``GET /v1/tasks/{id}``) or as an event's data."""
        base = self._settings.public_url
        outputs = [
            {"url": blobs.url(base, o["blob_id"]), "content_type": o["content_type"]}
            for o in orjson.loads(task.outputs)
        ]
        if event:
            data: dict[str, Any] = {"task_id": task.id}
        else:
            data = {"id": task.id}
        data.update(
            provider=task.provider,
            provider_task_id=task.provider_task_id,
            status=task.status,
            outputs=outputs,
            error=task.error,
        )
        if event:
            data["at"] = events.iso(time.time())
            if task.channel_id is not None:
                data["channel_id"] = task.channel_id
        else:
            data.update(
                channel_id=task.channel_id,
                attempts=task.attempts,
                created_at=events.iso(task.created_at),
                updated_at=events.iso(task.updated_at),
                stream_url=f"{base}/v1/tasks/{task.id}/events",
            )
        return data

    def _timeout_message(self) -> str:
        return f"no result within {self._settings.task_timeout_seconds} s"

    async def _edit_request(self, task: TaskRecord, provider: Provider) -> EditRequest:
        spec = orjson.loads(task.input)
        # Input URLs outlive the task, so a provider that fetches late still can.
        ttl = int(task.deadline - time.time()) + 3600
        images = tuple(
            [
                await self._input_image(blob_id, f"image-{i + 1}", ttl)
                for i, blob_id in enumerate(spec["images"])
            ]
        )
        mask = await self._input_image(spec["mask"], "mask", ttl) if spec.get("mask") else None
        callback_url = None
        public = self._settings.public_url
        if provider.supports_callback and provider.wants_callback(public):
            token = self._signer.issue(
                CALLBACK, Claims(None, int(task.deadline) + 3600, task_id=task.id)
            )
            callback_url = f"{public}/callbacks/{token}"
        return EditRequest(
            task_id=task.id,
            prompt=spec["prompt"],
            images=images,
            mask=mask,
            size=spec.get("size"),
            quality=spec.get("quality"),
            background=spec.get("background"),
            output_format=spec.get("output_format"),
            n=spec.get("n"),
            callback_url=callback_url,
            callback_secret=task.callback_secret,
        )

    async def _input_image(self, blob_id: str, name: str, ttl: int) -> InputImage:
        blob = await self._store.get_blob(blob_id)
        if blob is None:
            raise ProviderError(f"input image {blob_id} is no longer kept", retryable=False)
        store = self._store

        async def load() -> bytes:
            found = await store.get_blob(blob_id)
            return found.data if found is not None else b""

        return InputImage(
            blob_id=blob.id,
            content_type=blob.content_type,
            filename=f"{name}.{blobs.EXTENSIONS.get(blob.content_type, 'png')}",
            url=blobs.public_url(self._signer, self._settings.public_url, blob.id, ttl),
            load=load,
        )

    async def _store_outputs(self, task: TaskRecord, outputs: tuple[Output, ...]) -> list[Blob]:
        stored = []
        for output in outputs:
            if output.data is not None:
                stored.extend(self._decoded_outputs(task, (output,)))
            elif output.url is not None:
                data, content_type = await fetch(
                    self._client,
                    output.url,
                    max_bytes=self._settings.max_image_bytes,
                    within=60.0,
                    allow_private=self._settings.loopback_allowed,
                )
                kind = blobs.sniff(data) or content_type.split(";")[0] or "application/octet-stream"
                stored.append(blobs.make(task.owner, data, kind))
        return stored

    def _decoded_outputs(self, task: TaskRecord, outputs: tuple[Output, ...]) -> list[Blob]:
        made = []
        for output in outputs:
            assert output.data is not None
            kind = blobs.sniff(output.data) or output.content_type or "application/octet-stream"
            made.append(blobs.make(task.owner, output.data, kind))
        return made


def _reason(provider: str, error: str | None) -> str:
    """A failure as the task reports it: always naming the provider it came from."""
    if not error:
        return f"{provider}: the job failed (no reason given)"
    return error if error.startswith(f"{provider}:") else f"{provider}: {error}"


def _provider_error(provider: str, exc: Exception) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(f"{provider} did not answer in time", retryable=True)


def _replace(task: TaskRecord, **changes: Any) -> TaskRecord:
    return dataclasses.replace(task, **changes)


def _outcome_to_json(outcome: Outcome) -> bytes:
    # Only URL outputs wait here; bytes are stored as blobs at once.
    return orjson.dumps(
        {
            "state": outcome.state,
            "provider_task_id": outcome.provider_task_id,
            "urls": [o.url for o in outcome.outputs if o.url is not None],
            "error": outcome.error,
        }
    )


def _outcome_from_json(data: bytes) -> Outcome:
    raw = orjson.loads(data)
    return Outcome(
        state=raw["state"],
        provider_task_id=raw.get("provider_task_id"),
        outputs=tuple(Output(url=u) for u in raw.get("urls", [])),
        error=raw.get("error"),
    )


__all__ = ["TERMINAL", "TaskEngine"]
