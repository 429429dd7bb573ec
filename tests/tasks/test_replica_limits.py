"""Two replicas on one PostgreSQL database share one provider account's limits: jobs
unfinished at once and calls per window are counted in the store, not per process."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Mapping

import httpx
import orjson
import pytest

from hub.access.tokens import Signer
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
from hub.store.base import Event
from hub.store.postgres import PostgresStore
from hub.tasks.engine import TaskEngine
from tests.helpers import make_png, until

IN_FLIGHT, PER_WINDOW, WINDOW = 10, 60, 3.0
JOB_SECONDS = 0.25
TASKS = 60


class Account:
    """One Eachlabs account, as both replicas see it: a prediction is in flight from its
    submit until it finishes (JOB_SECONDS later). It records every call, and refuses a
    prediction beyond its cap with Eachlabs' 429 (which the hub should never need)."""

    name = "eachlabs"
    supports_callback = False
    max_n = 1

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.in_flight = 0
        self.peak = 0
        self.refused = 0
        self.submits = 0
        self._finished: set[str] = set()
        self._ids = itertools.count()
        self._jobs: set[asyncio.Task[None]] = set()

    def wants_callback(self, public_url: str) -> bool:
        return False

    async def submit(self, request: EditRequest) -> Outcome:
        self.calls.append(time.time())
        if self.in_flight >= IN_FLIGHT:
            self.refused += 1
            raise ProviderError(
                "eachlabs: HTTP 429: too many predictions in flight",
                resend=Resend.SAFE,
                code=ErrorCode.RATE_LIMITED,
                status=429,
                slot_full=True,
            )
        self.submits += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        prediction = f"p-{next(self._ids)}"
        job = asyncio.create_task(self._run(prediction))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return Outcome("pending", provider_task_id=prediction)

    async def _run(self, prediction: str) -> None:
        await asyncio.sleep(JOB_SECONDS)
        self.in_flight -= 1
        self._finished.add(prediction)

    async def poll(self, provider_task_id: str, *, age: float | None = None) -> Outcome:
        self.calls.append(time.time())
        if provider_task_id not in self._finished:
            return Outcome("pending", provider_task_id=provider_task_id)
        return Outcome("succeeded", provider_task_id, outputs=(Output(data=make_png()),))

    async def cancel(self, provider_task_id: str) -> bool:
        return False

    async def parse_callback(
        self, headers: Mapping[str, str], body: bytes, secret: str | None
    ) -> Outcome:
        raise AssertionError("polled only")

    def busiest_window(self) -> int:
        """The most calls in any WINDOW seconds."""
        calls = sorted(self.calls)
        start, most = 0, 0
        for end, at in enumerate(calls):
            while calls[start] <= at - WINDOW:
                start += 1
            most = max(most, end - start + 1)
        return most


@pytest.fixture
async def replicas(
    make_settings, pg_url: str
) -> AsyncIterator[tuple[Account, list[TaskEngine], PostgresStore]]:
    account = Account()
    settings = make_settings(database_url=pg_url, provider_rate_window_seconds=WINDOW)
    config = ProviderConfig(
        "eachlabs",
        "http://eachlabs.test",
        "k",
        requests_per_minute=PER_WINDOW,
        concurrency=IN_FLIGHT,
        first_poll_after=JOB_SECONDS,
        poll_interval=0.1,
    )
    published: list[Event] = []
    opened: list[tuple[TaskEngine, PostgresStore, httpx.AsyncClient]] = []
    try:
        for _ in range(2):
            store = PostgresStore(pg_url, published.extend)
            await store.open()
            client = httpx.AsyncClient()
            engine = TaskEngine(
                settings,
                store,
                Signer(settings.secret_keys),
                client,
                {"eachlabs": account},
                {"eachlabs": config},
            )
            await engine.start()
            opened.append((engine, store, client))
        yield account, [engine for engine, _, _ in opened], opened[0][1]
    finally:
        for engine, store, client in opened:
            await engine.stop()
            await client.aclose()
            await store.close()


async def test_two_replicas_keep_one_account_within_its_limits(replicas):
    account, engines, store = replicas
    blob = records.make("owner", make_png(), "image/png")
    await store.put_blob(blob)
    data = orjson.dumps({"prompt": "p", "images": [blob.id]})
    tasks = [await engines[n % 2].create("owner", "eachlabs", None, data) for n in range(TASKS)]

    async def all_ended() -> bool:
        found = [await store.get_task(task.id) for task in tasks]
        return all(task is not None and task.terminal for task in found)

    await until(all_ended, timeout=120, every=0.2)
    ended = [await store.get_task(task.id) for task in tasks]
    print(
        f"\n{TASKS} tasks on 2 replicas: peak {account.peak} in flight (cap {IN_FLIGHT}),"
        f" busiest {WINDOW:g} s window {account.busiest_window()} calls (cap {PER_WINDOW}),"
        f" {len(account.calls)} calls"
    )
    assert [task.status for task in ended if task is not None] == ["succeeded"] * TASKS
    assert account.submits == TASKS and account.refused == 0
    assert account.peak <= IN_FLIGHT
    assert account.busiest_window() <= PER_WINDOW
    # Both limits were reached, so both were what held the tasks back.
    assert account.peak == IN_FLIGHT
    assert account.busiest_window() >= PER_WINDOW * 0.75
