"""Money: a task is sent to its provider at most once unless the provider's answer proves
nothing was accepted; retries and waits are visible; every image asked for is kept."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import orjson

from hub.providers.base import ErrorCode, Outcome, Output, ProviderError, Resend
from hub.store.base import CallLimits, Delivery, TaskRecord
from hub.store.sqlite import SQLiteStore
from tests.helpers import make_png, until
from tests.tasks import test_engine
from tests.tasks.test_engine import PENDING, Scripted, ended

engine_for = test_engine.engine_for  # the fixture

UNKNOWN = ProviderError(
    "scripted: the connection was cut after the job was sent",
    resend=Resend.UNKNOWN,
    code=ErrorCode.OUTCOME_UNKNOWN,
)
DONE = Outcome("succeeded", provider_task_id="p-1", outputs=(Output(data=make_png()),))


def busy(retry_after: float | None = None, *, slot_full: bool = False) -> ProviderError:
    return ProviderError(
        "scripted: HTTP 429: too many requests",
        resend=Resend.SAFE,
        code=ErrorCode.RATE_LIMITED,
        status=429,
        retry_after=retry_after,
        slot_full=slot_full,
    )


def delivery(task_id: str, body: bytes) -> Delivery:
    digest = hashlib.sha256(body).digest()
    return Delivery(
        None, b"t" * 32, digest, "application/json", b"[]", body, time.time(), task_id, None, None
    )


def events_of(engine_for, task_id: str, kind: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(e.data)
        for e in engine_for.published
        if e.task_id == task_id and e.type == kind
    ]


async def test_an_unknown_outcome_without_a_callback_fails_and_is_never_sent_again(engine_for):
    provider = Scripted([UNKNOWN, PENDING], [DONE])
    store, task = await engine_for(provider)
    done = await ended(store, task.id)
    assert provider.submit_calls == 1
    assert done.status == "failed" and done.error_code == "outcome_unknown"
    assert done.error is not None and "may have charged" in done.error
    assert done.sending_at is None and events_of(engine_for, task.id, "task.retrying") == []


async def test_an_unknown_outcome_waits_for_the_callback_which_finishes_it(engine_for):
    provider = Scripted([UNKNOWN, PENDING], [DONE], callback=True)
    store, task = await engine_for(provider)

    async def waiting() -> bool:
        now = await store.get_task(task.id)
        return now is not None and now.last_error_code == "outcome_unknown"

    await until(waiting, timeout=10)
    still = await store.get_task(task.id)
    assert still is not None and still.status == "queued" and still.sending_at is not None
    engine = engine_for.engines[0][0]
    body = b'{"done": true}'
    assert await engine.apply_callback(task.id, DONE, delivery(task.id, body))
    done = await ended(store, task.id)
    assert done.status == "succeeded" and provider.submit_calls == 1
    assert len(orjson.loads(done.outputs)) == 1 and done.sending_at is None


async def test_no_callback_within_the_grace_fails_with_outcome_unknown(engine_for):
    provider = Scripted([UNKNOWN, PENDING], [DONE], callback=True)
    store, task = await engine_for(provider, task_unknown_grace_seconds=0.3)
    done = await ended(store, task.id)
    assert done.status == "failed" and done.error_code == "outcome_unknown"
    assert done.error is not None and "connection was cut" in done.error
    assert provider.submit_calls == 1


async def test_a_task_found_being_sent_is_never_sent_again(engine_for):
    """What a crash (or a stop, or a lease taken over) leaves: the marker, no answer."""

    async def crashed_mid_send(store: SQLiteStore, task: TaskRecord) -> None:
        now = time.time()
        marker = {"sending_at": now, "attempts": 1, "lease_until": now + 60}
        assert (await store.take_slot(task.id, CallLimits("scripted"), now, marker)).taken
        await store.release_leases()

    provider = Scripted(PENDING, [DONE])
    store, task = await engine_for(provider, before_start=crashed_mid_send)
    done = await ended(store, task.id)
    assert provider.submit_calls == 0
    assert done.status == "failed" and done.error_code == "outcome_unknown"
    assert done.attempts == 1


async def test_a_refusal_fails_at_once(engine_for):
    refused = ProviderError(
        "scripted: HTTP 400: bad image", resend=Resend.NEVER, code=ErrorCode.PROVIDER_REFUSED
    )
    provider = Scripted([refused, PENDING], [DONE])
    store, task = await engine_for(provider)
    done = await ended(store, task.id)
    assert provider.submit_calls == 1 and done.attempts == 1
    assert (done.status, done.error_code, done.error) == (
        "failed",
        "provider_refused",
        "scripted: HTTP 400: bad image",
    )


async def test_a_safe_failure_is_retried_after_its_retry_after_and_said_so(engine_for):
    provider = Scripted([busy(0.2), busy(0.2), PENDING], [DONE])
    store, task = await engine_for(provider)
    done = await ended(store, task.id)
    assert done.status == "succeeded" and provider.submit_calls == 3 and done.attempts == 3
    retries = events_of(engine_for, task.id, "task.retrying")
    assert [r["attempt"] for r in retries] == [1, 2]
    for retry in retries:
        assert retry["error"] == {
            "code": "rate_limited",
            "message": "scripted: HTTP 429: too many requests",
        }
        # Not sooner than the provider asked (ISO timestamps order as text).
        assert retry["retry_at"] > retry["at"]
    assert done.last_error_code == "rate_limited" and done.retry_at is None


async def test_safe_failures_are_bounded_by_max_attempts(engine_for):
    provider = Scripted([busy(0.01)], [DONE])
    store, task = await engine_for(provider, task_max_attempts=3)
    done = await ended(store, task.id)
    assert provider.submit_calls == 3 and done.status == "failed"
    assert done.error_code == "rate_limited" and done.error is not None
    assert done.error.endswith("(after 3 attempts)")
    assert len(events_of(engine_for, task.id, "task.retrying")) == 2


async def test_a_full_slot_is_waited_for_without_spending_attempts(engine_for):
    full = busy(0.05, slot_full=True)
    provider = Scripted([full, full, full, PENDING], [DONE])
    store, task = await engine_for(provider, task_max_attempts=2)
    done = await ended(store, task.id)
    assert done.status == "succeeded" and provider.submit_calls == 4
    assert done.attempts == 1  # the waits cost none
    assert [r["attempt"] for r in events_of(engine_for, task.id, "task.retrying")] == [1, 1, 1]


async def test_the_hubs_own_limit_is_waited_for_and_said_so_once(engine_for):
    """The provider takes one job at a time: the second task waits for the first to end,
    says so once, spends no attempt, and then goes."""
    provider = Scripted(PENDING, [PENDING, PENDING, DONE])
    store, task = await engine_for(provider, limits={"concurrency": 1})
    engine = engine_for.engines[0][0]
    other = await engine.create("owner", "scripted", None, task.input)
    first, second = await ended(store, task.id), await ended(store, other.id)
    assert first.status == second.status == "succeeded"
    assert first.attempts == second.attempts == 1 and provider.submit_calls == 2
    waited = [r for t in (task.id, other.id) for r in events_of(engine_for, t, "task.retrying")]
    assert len(waited) == 1 and waited[0]["error"]["code"] == "rate_limited"
    assert "1 jobs unfinished" in waited[0]["error"]["message"]


async def test_a_short_callback_is_completed_by_a_poll_and_every_image_kept(engine_for):
    first, second = make_png((2, 2)), make_png((3, 3))
    polled = Outcome(
        "succeeded", provider_task_id="p-1", outputs=(Output(data=first), Output(data=second))
    )
    provider = Scripted(PENDING, [polled], callback=True, max_n=2)
    store, task = await engine_for(provider, spec={"n": 2})

    async def submitted() -> bool:
        now = await store.get_task(task.id)
        return now is not None and now.status == "submitted"

    await until(submitted, timeout=10)
    polls_before = provider.poll_calls
    short = Outcome("succeeded", provider_task_id="p-1", outputs=(Output(data=first),))
    engine = engine_for.engines[0][0]
    assert await engine.apply_callback(task.id, short, delivery(task.id, b"{}"))
    done = await ended(store, task.id)
    assert done.status == "succeeded" and provider.poll_calls > polls_before
    kept = [await store.get_blob(o["blob_id"]) for o in orjson.loads(done.outputs)]
    assert [b.data for b in kept if b is not None] == [first, second]


async def test_base64_and_url_outputs_are_all_kept_in_order(engine_for):
    a, b, c = make_png((2, 2)), make_png((3, 3)), make_png((4, 4))

    def serve(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/b.png"
        return httpx.Response(200, content=b, headers={"content-type": "image/png"})

    mixed = Outcome(
        "succeeded",
        provider_task_id="p-1",
        outputs=(Output(data=a), Output(url="http://127.0.0.1/b.png"), Output(data=c)),
    )
    provider = Scripted(mixed, [], max_n=3)
    store, task = await engine_for(
        provider, spec={"n": 3}, transport=httpx.MockTransport(serve), allow_loopback_urls=True
    )
    done = await ended(store, task.id)
    assert done.status == "succeeded"
    kept = [await store.get_blob(o["blob_id"]) for o in orjson.loads(done.outputs)]
    assert [blob.data for blob in kept if blob is not None] == [a, b, c]


async def test_a_mixed_callback_keeps_its_base64_image_beside_the_url(engine_for):
    a, b = make_png((2, 2)), make_png((3, 3))

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b, headers={"content-type": "image/png"})

    provider = Scripted(PENDING, [PENDING], callback=True, max_n=2)
    store, task = await engine_for(
        provider, spec={"n": 2}, transport=httpx.MockTransport(serve), allow_loopback_urls=True
    )
    engine = engine_for.engines[0][0]
    mixed = Outcome(
        "succeeded",
        provider_task_id="p-1",
        outputs=(Output(data=a), Output(url="http://127.0.0.1/b.png")),
    )
    assert await engine.apply_callback(task.id, mixed, delivery(task.id, b"{}"))
    done = await ended(store, task.id)
    kept = [await store.get_blob(o["blob_id"]) for o in orjson.loads(done.outputs)]
    assert [blob.data for blob in kept if blob is not None] == [a, b]


async def test_polls_are_told_the_jobs_age(engine_for):
    provider = Scripted(PENDING, [PENDING, PENDING, DONE])
    store, task = await engine_for(provider)
    await ended(store, task.id)
    ages = provider.ages
    assert len(ages) == 3 and all(age is not None and age >= 0 for age in ages)
    assert ages == sorted(ages)  # type: ignore[type-var]


async def test_an_unknown_outcome_with_a_handle_is_looked_up_and_never_sent_again(engine_for):
    """A 5xx that leaves a handle to find the job by (AceData's trace id): the hub asks
    the provider about that job instead of sending it again, and takes its result."""
    lost = ProviderError(
        "scripted: HTTP 500: internal error",
        resend=Resend.UNKNOWN,
        code=ErrorCode.OUTCOME_UNKNOWN,
        provider_task_id="trace:t-1",
    )
    provider = Scripted([lost, PENDING], [PENDING, DONE])
    store, task = await engine_for(provider, task_unknown_grace_seconds=30)
    done = await ended(store, task.id)
    assert done.status == "succeeded" and provider.submit_calls == 1
    assert provider.polled == ["trace:t-1", "trace:t-1"]
    assert len(orjson.loads(done.outputs)) == 1 and done.sending_at is None


async def test_an_unknown_outcome_whose_handle_finds_nothing_fails_after_the_grace(engine_for):
    lost = ProviderError(
        "scripted: HTTP 500: internal error",
        resend=Resend.UNKNOWN,
        code=ErrorCode.OUTCOME_UNKNOWN,
        provider_task_id="trace:t-2",
    )
    provider = Scripted([lost, PENDING], [PENDING])
    store, task = await engine_for(provider, task_unknown_grace_seconds=1)
    done = await ended(store, task.id)
    assert done.status == "failed" and done.error_code == "outcome_unknown"
    assert provider.submit_calls == 1 and provider.polled and set(provider.polled) == {"trace:t-2"}
