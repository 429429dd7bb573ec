"""Outbound webhooks: every event of a channel or task that names an endpoint is POSTed
there, signed per Standard Webhooks (https://www.standardwebhooks.com).

The store's outbox makes it durable: an event is enqueued for each endpoint in the same
transaction that moves the outbox's cursor, and an entry is settled only after the
receiver answered, so a crash between the two sends it again (receivers dedupe on
``webhook-id``, which is the same on every attempt). Failed attempts are retried with
backoff until ``HUB_WEBHOOK_MAX_ATTEMPTS``; an endpoint that fails
``HUB_WEBHOOK_FAILING_AFTER`` times in a row is reported: its record says so, and its
channel or task stream gets one ``webhook.failing`` event.

An attempt is claimed under a short lease (``HUB_WEBHOOK_LEASE_SECONDS``, 15 s), renewed
every third of it while the attempt is in flight, however long the receiver takes: so a
replica that dies mid-attempt has its job taken over by another within about a lease,
and a live one's is never taken from it while it can reach the store. A renewal names the
lease it holds, so one that ran out and was taken over is not extended by its old holder.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from hub.background.loops import Health, forever
from hub.config.settings import Settings
from hub.enums import EventType, TaskStatus
from hub.formats import dumps, iso, loads
from hub.metrics import Metrics
from hub.net.backoff import backoff
from hub.net.fetch import FetchError, Resolver, post, resolve
from hub.store.base import NewEvent, Store, WebhookJob
from hub.webhooks.signing import sign

log = logging.getLogger("hub.webhooks")

PAGE = 500
CONCURRENCY = 16
ROUND_GAP = 0.05
RETRY_CAP = 3600.0


def payload(job: WebhookJob) -> bytes:
    event = job.event
    # The event's data is JSON already: spliced in, not decoded and encoded again.
    head = dumps({"type": event.type, "timestamp": iso(event.created_at), "id": event.id})
    return head[:-1] + b',"data":' + event.data + b"}"


class Webhooks:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        client: httpx.AsyncClient,
        resolver: Resolver = resolve,
        metrics: Metrics | None = None,
        health: Health | None = None,
        revoked: Callable[[str], bool] = lambda owner: False,
    ) -> None:
        self._revoked = revoked
        self.component = (health or Health()).component("webhooks", stuck_after=30.0)
        self._settings = settings
        self._metrics = metrics
        self._store = store
        self._client = client
        self._resolver = resolver
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._lease = settings.webhook_lease_seconds
        # Outbox id -> the lease_until this dispatcher holds on it, for attempts in flight.
        self._held: dict[int, float] = {}
        self.leases = (health or Health()).component(
            "webhook-leases", stuck_after=self._lease * 2 + 30.0
        )
        self._renewer: asyncio.Task[None] | None = None

    def kick(self) -> None:
        """New events were committed: look for webhooks to send now, not at the next tick."""
        self._kick.set()

    async def start(self) -> None:
        self._task = self.component.task = asyncio.create_task(
            forever(self.component, self._step), name="hub-webhooks"
        )
        self._renewer = self.leases.task = asyncio.create_task(
            forever(self.leases, self._renew, cap=self._lease / 3), name="hub-webhook-leases"
        )

    async def stop(self) -> None:
        tasks = [t for t in (self._task, self._renewer, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._renewer = None

    async def _step(self) -> float:
        self._kick.clear()
        await self._round()
        # At most a round per ROUND_GAP under a flood (commits kick it all the time),
        # and one a second when all is quiet (retries come due by the clock).
        await asyncio.sleep(ROUND_GAP)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._kick.wait()
        return 0.0

    async def _round(self) -> None:
        while await self._store.enqueue_webhooks(time.time(), PAGE):
            pass
        free = CONCURRENCY - len(self._sending)
        if free <= 0:
            return
        now = time.time()
        for job in await self._store.claim_webhooks(now, self._lease, free):
            # The same sum the store leased it until: what a renewal names as held.
            self._held[job.id] = now + self._lease
            self._spawn(self._send(job), job.id)

    async def _renew(self) -> float:
        """Extend the lease of every attempt in flight; the wait until the next renewal."""
        every = self._lease / 3
        held = dict(self._held)
        if not held:
            return every
        until = time.time() + self._lease
        renewed = await self._store.renew_webhook_leases(held, until)
        for outbox_id, lease in held.items():
            if self._held.get(outbox_id) != lease:
                continue  # settled meanwhile (or settled and claimed again)
            if outbox_id in renewed:
                self._held[outbox_id] = until
            else:
                # Its lease ran out before a renewal got through (the store was away):
                # another replica may send it too; receivers dedupe on webhook-id.
                log.warning("webhook attempt %d: lease lost; another replica may send it",
                            outbox_id)  # fmt: skip
                del self._held[outbox_id]
        return every

    def _spawn(self, coro: Coroutine[Any, Any, None], outbox_id: int) -> None:
        task = asyncio.create_task(_logged(coro))
        self._sending.add(task)
        task.add_done_callback(lambda done: self._sent(done, outbox_id))

    def _sent(self, task: asyncio.Task[None], outbox_id: int) -> None:
        self._sending.discard(task)
        self._held.pop(outbox_id, None)
        self._kick.set()  # a slot is free

    async def _send(self, job: WebhookJob) -> None:
        if self._revoked(job.endpoint.owner):
            # Nothing more for a key that was revoked: given up, never sent.
            await self._settle(job, "the key that made this webhook is revoked", final=True)
            return
        # An "acedata" endpoint is only ever given its task's end (see store.columns).
        body = await self._acedata_body(job) if job.endpoint.format == "acedata" else payload(job)
        message_id = f"evt_{job.event.id}"
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "hub-webhooks",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(job.endpoint.secret, message_id, timestamp, body),
        }
        error: str | None = None
        try:
            code = await post(
                self._client,
                job.endpoint.url,
                body,
                headers,
                within=self._settings.webhook_timeout_seconds,
                allow_private=self._settings.loopback_allowed,
                resolver=self._resolver,
            )
            if not 200 <= code < 300:
                error = f"answered HTTP {code}"
        except FetchError as exc:
            error = str(exc)
        except Exception as exc:
            # Whatever it was, it is this endpoint's failure: counted, backed off and
            # reported like any other, never a silent retry at each lease's end.
            log.exception("webhook %s: sending failed", job.endpoint.id)
            error = f"could not be sent ({type(exc).__name__})"
        await self._settle(job, error)

    async def _acedata_body(self, job: WebhookJob) -> bytes:
        """AceData's callback body: what POST /v1/images/edits promises a callback_url."""
        task_id = job.endpoint.task_id or ""
        task = await self._store.get_task(task_id)
        trace_id = f"evt_{job.event.id}"
        if task is None or task.status != TaskStatus.SUCCEEDED:
            error = {"code": "provider_failed", "message": task.error if task else "no task"}
            return dumps(
                {"success": False, "task_id": task_id, "trace_id": trace_id, "error": error}
            )
        images = []
        for output in loads(task.outputs):
            blob = await self._store.get_blob(output["blob_id"])
            if blob is not None:
                images.append({"b64_json": base64.b64encode(blob.data).decode()})
        data = {"created": int(task.created_at), "data": images}
        return dumps({"success": True, "task_id": task_id, "trace_id": trace_id, "data": data})

    async def _settle(self, job: WebhookJob, error: str | None, *, final: bool = False) -> None:
        attempt = job.attempts + 1
        retry_at = None
        if error is not None and not final and attempt < self._settings.webhook_max_attempts:
            base = self._settings.webhook_retry_seconds
            retry_at = time.time() + backoff(attempt, base=base, cap=RETRY_CAP)
        failures = await self._store.settle_webhook(job, time.time(), error, retry_at)
        if self._metrics is not None:
            outcome = "delivered" if error is None else "retry" if retry_at else "given_up"
            self._metrics.webhooks.labels(outcome).inc()
        if error is None:
            return
        endpoint = job.endpoint
        log.info("webhook %s: attempt %d failed: %s", endpoint.id, attempt, error)
        if failures == self._settings.webhook_failing_after:
            # Once, as the endpoint crosses the line; a success resets the count.
            data = dumps(
                {"webhook_id": endpoint.id, "url": endpoint.url, "failures": failures,
                 "last_error": error, "at": iso(time.time())}
            )  # fmt: skip
            await self._store.add_events(
                [NewEvent(EventType.WEBHOOK_FAILING, data, endpoint.channel_id, endpoint.task_id)]
            )


async def _logged(coro: Coroutine[Any, Any, None]) -> None:
    """Run one delivery; a failure to settle it (the store unreachable) leaves its lease to
    run out, after which it is sent again: logged here, never lost."""
    try:
        await coro
    except Exception:
        log.exception("webhook delivery failed; it will be retried when its lease ends")
