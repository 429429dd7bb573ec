"""The task engine against a scripted provider and the real SQLite store."""

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson
import pytest

from hub.access.tokens import Signer
from hub.background.loops import Health
from hub.blobs import records
from hub.providers.base import (
    EditRequest,
    ErrorCode,
    Outcome,
    Output,
    ProviderConfig,
    ProviderError,
    Resend,
)
from hub.store.base import Event, TaskRecord
from hub.store.sqlite import SQLiteStore
from hub.tasks.engine import TaskEngine
from tests.helpers import make_png, until


class Scripted:
    """A provider that answers each submit and each poll from a list, in order (the last
    answer repeats). It counts every call: a second submit is a second bill."""

    name = "scripted"

    def __init__(
        self,
        submit: Outcome | list[Outcome | Exception],
        polls: list[Outcome | ProviderError],
        *,
        callback: bool = False,
        max_n: int = 1,
    ) -> None:
        self.requests: list[EditRequest] = []
        self.polled: list[str] = []
        self.submits = submit if isinstance(submit, list) else [submit]
        self.polls = polls
        self.submit_calls = 0
        self.poll_calls = 0
        self.ages: list[float | None] = []
        self.supports_callback = callback
        self.max_n = max_n

    def wants_callback(self, public_url: str) -> bool:
        return self.supports_callback

    async def submit(self, request: EditRequest) -> Outcome:
        self.requests.append(request)
        answer = self.submits[min(self.submit_calls, len(self.submits) - 1)]
        self.submit_calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        answer = self.polls[min(self.poll_calls, len(self.polls) - 1)]
        self.poll_calls += 1
        self.ages.append(age)
        self.polled.append(provider_task_id)
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    async def cancel(self, provider_task_id: str) -> bool:
        return False

    async def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str | None
    ) -> Outcome:
        raise AssertionError("callbacks are applied with engine.apply_callback here")


PENDING = Outcome("pending", provider_task_id="p-1")


@pytest.fixture
async def engine_for(make_settings, tmp_path):
    engines = []
    published: list[Event] = []

    async def make(
        provider: Scripted,
        *,
        spec: dict[str, object] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        before_start: Callable[[SQLiteStore, TaskRecord], Awaitable[None]] | None = None,
        limits: dict[str, Any] | None = None,
        **changes,
    ):
        settings = make_settings(**changes)
        store = SQLiteStore(tmp_path / "tasks.db", published.extend, synchronous="NORMAL")
        await store.open()
        client = httpx.AsyncClient(transport=transport)
        config = ProviderConfig(
            "scripted",
            "http://scripted.test",
            "k",
            first_poll_after=0.01,
            poll_interval=0.01,
            **(limits or {}),
        )
        health = Health()
        engine = TaskEngine(
            settings,
            store,
            Signer(settings.secret_keys),
            client,
            {"scripted": provider},
            {"scripted": config},
            health=health,
        )
        engines.append((engine, store, client))
        blob = records.make("owner", make_png(), "image/png")
        await store.put_blob(blob)
        data = orjson.dumps({"prompt": "p", "images": [blob.id], **(spec or {})})
        if before_start is None:
            await engine.start()
            task = await engine.create("owner", "scripted", None, data)
        else:
            # Made, and changed, before any worker runs (what a crash leaves behind).
            task = await engine.create("owner", "scripted", None, data)
            await before_start(store, task)
            await engine.start()
        engine.health = health  # type: ignore[attr-defined]
        return store, task

    make.engines = engines  # type: ignore[attr-defined]
    make.published = published  # type: ignore[attr-defined]
    yield make
    for engine, store, client in engines:
        await engine.stop()
        await client.aclose()
        await store.close()


async def ended(store, task_id, timeout=10.0):
    async def done():
        task = await store.get_task(task_id)
        return task is not None and task.terminal

    await until(done, timeout=timeout)
    return await store.get_task(task_id)


async def test_a_retryable_poll_error_is_retried_then_the_task_succeeds(engine_for):
    data = make_png()
    provider = Scripted(
        PENDING,
        [
            ProviderError(
                "busy", resend=Resend.SAFE, code=ErrorCode.PROVIDER_UNAVAILABLE, status=503
            ),
            PENDING,
            Outcome("succeeded", outputs=(Output(data=data),)),
        ],
    )
    store, task = await engine_for(provider)
    done = await ended(store, task.id)
    assert done.status == "succeeded" and provider.poll_calls == 3
    [output] = orjson.loads(done.outputs)
    stored = await store.get_blob(output["blob_id"])
    assert stored.data == data and stored.owner == "owner" and stored.content_type == "image/png"


async def test_every_option_of_the_input_reaches_the_provider(engine_for):
    options: dict[str, object] = {"size": "1024x1536", "quality": "low", "n": 1}
    options |= {"background": "opaque", "output_format": "jpeg", "output_compression": 40}
    done = Outcome("succeeded", outputs=(Output(data=make_png()),))
    provider = Scripted(done, [])
    store, task = await engine_for(provider, spec=options)
    await ended(store, task.id)
    [request] = provider.requests
    assert {name: getattr(request, name) for name in options} == options


async def test_a_final_poll_error_fails_the_task_with_its_message(engine_for):
    provider = Scripted(
        PENDING,
        [
            ProviderError(
                "scripted: HTTP 401: bad key",
                resend=Resend.NEVER,
                code=ErrorCode.PROVIDER_REFUSED,
                status=401,
            )
        ],
    )
    store, task = await engine_for(provider)
    done = await ended(store, task.id)
    assert done.status == "failed" and done.error == "scripted: HTTP 401: bad key"


async def test_a_result_without_an_image_fails_the_task(engine_for):
    store, task = await engine_for(Scripted(Outcome("succeeded", provider_task_id="p-1"), []))
    done = await ended(store, task.id)
    assert done.status == "failed" and done.error == "scripted returned no image"


async def test_an_output_at_a_private_address_is_never_fetched(engine_for):
    # The provider's URL points inside: the download is refused before any connection,
    # retried until the deadline, and the task ends timed_out rather than hanging.
    outcome = Outcome(
        "succeeded", provider_task_id="p-1", outputs=(Output(url="http://10.255.255.1/x.png"),)
    )
    store, task = await engine_for(Scripted(outcome, []), task_timeout_seconds=1)
    done = await ended(store, task.id)
    assert done.status == "timed_out" and done.outputs == b"[]"


class Hanging(Scripted):
    """A provider whose status endpoint never answers."""

    def __init__(self) -> None:
        super().__init__(PENDING, [])
        self.polling = False

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        self.polling = True
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_stopped_engine_hands_back_the_work_it_cut_short(engine_for):
    """Stopping (a rolling restart) cancels a poll under way; its lease is released, so
    another worker may take the task at once instead of after the lease (minutes)."""
    provider = Hanging()
    store, task = await engine_for(provider)
    await until(lambda: provider.polling, timeout=10)
    engine = engine_for.engines[0][0]
    await engine.stop(grace=0.05)
    [again] = await store.claim_tasks(time.time(), 60.0, 10)
    assert again.id == task.id and again.status == "submitted"


async def test_a_store_error_in_next_due_does_not_end_the_worker(engine_for):
    """Issue 15 #12: one transient store error in next_due ended the worker for good. Now
    the loop logs it, waits, goes on, and /healthz's component says so meanwhile."""
    provider = Scripted(PENDING, [Outcome("succeeded", outputs=(Output(data=make_png()),))])
    store, task = await engine_for(provider)
    await ended(store, task.id)
    engine = engine_for.engines[0][0]
    real = store.next_due
    broken = True

    async def next_due():
        if broken:
            raise sqlite3.OperationalError("disk I/O error")
        return await real()

    store.next_due = next_due
    engine.wake()

    def state() -> str:
        return engine.health.report()[1]["tasks"]["state"]

    await until(lambda: state() == "failing", timeout=10)
    assert not engine.health.report()[0]  # /healthz answers 503 meanwhile
    broken = False
    again = await engine.create("owner", "scripted", None, task.input)
    assert (await ended(store, again.id)).status == "succeeded"
    await until(lambda: state() == "ok", timeout=10)


class Holding(Scripted):
    """A provider whose submit lasts until the test lets it answer."""

    def __init__(self) -> None:
        super().__init__(PENDING, [Outcome("succeeded", outputs=(Output(data=make_png()),))])
        self.sending = False
        self.answer = asyncio.Event()

    async def submit(self, request: EditRequest) -> Outcome:
        self.sending = True
        self.submit_calls += 1
        await self.answer.wait()
        return PENDING


async def test_a_live_workers_lease_is_renewed_through_a_long_call(engine_for):
    provider = Holding()
    store, task = await engine_for(provider, task_lease_seconds=0.3)
    await until(lambda: provider.sending, timeout=10)

    async def lease() -> float:
        [(until_,)] = await store._rows("SELECT lease_until FROM tasks WHERE id = ?", (task.id,))
        return float(until_)

    first = await lease()

    async def renewed_twice() -> bool:
        return await lease() > first + 0.5

    await until(renewed_twice, timeout=10)
    # Held all along: another worker finds nothing to take over.
    assert await store.claim_tasks(time.time(), 0.3, 10) == []
    provider.answer.set()
    done = await ended(store, task.id)
    assert done.status == "succeeded" and provider.submit_calls == 1


async def test_a_submit_cut_short_by_a_stop_is_never_sent_again(engine_for, make_settings):
    """A rolling restart stops the engine mid-submit: the next engine on the store finds
    the sending marker and ends the task outcome_unknown instead of sending it again."""
    provider = Holding()
    store, task = await engine_for(provider)
    await until(lambda: provider.sending, timeout=10)
    await engine_for.engines[0][0].stop(grace=0.05)
    settings = make_settings()
    config = ProviderConfig("scripted", "http://scripted.test", "k")
    client = httpx.AsyncClient()
    again = TaskEngine(
        settings, store, Signer(settings.secret_keys), client,
        {"scripted": provider}, {"scripted": config},
    )  # fmt: skip
    await again.start()
    try:
        done = await ended(store, task.id)
    finally:
        await again.stop()
        await client.aclose()
    assert provider.submit_calls == 1
    assert done.status == "failed" and done.error_code == "outcome_unknown"
