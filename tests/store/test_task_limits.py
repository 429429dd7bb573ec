"""The task parts of every store, alike on SQLite and PostgreSQL: the sending marker taken
with a provider's slot, the shared rate window, and leases renewed only while held."""

from __future__ import annotations

import time

from hub.enums import TaskStatus
from hub.store.base import CallLimits, NewEvent, Store, TaskRecord
from tests.store import test_contract

store = test_contract.store  # the fixture: each test runs on both stores


async def add_task(store: Store, task_id: str, provider: str = "eachlabs") -> TaskRecord:
    now = time.time()
    task = TaskRecord(
        task_id, "owner", provider, TaskStatus.QUEUED, b"{}", None, None, None, b"[]", None,
        None, 0, now, now + 600, now, now,
    )  # fmt: skip
    await store.create_task(task, NewEvent("task.queued", b"{}", task_id=task_id))
    return task


def marker(now: float) -> dict[str, object]:
    return {"sending_at": now, "attempts": 1, "lease_until": now + 10}


async def test_a_slot_is_taken_once_and_counts_unfinished_jobs(store: Store) -> None:
    limits = CallLimits("eachlabs", concurrency=2)
    now = time.time()
    for name in ("a", "b", "c", "other"):
        await add_task(store, name, "segmind" if name == "other" else "eachlabs")
    assert (await store.take_slot("a", limits, now, marker(now))).taken
    # Being sent already: never a second time.
    assert (await store.take_slot("a", limits, now, marker(now))).reason == "gone"
    sent = await store.get_task("a")
    assert sent is not None and sent.sending_at == now and sent.attempts == 1
    assert (await store.take_slot("b", limits, now, marker(now))).taken
    # Two unfinished (being sent): the third waits; another provider's count is its own.
    full = await store.take_slot("c", limits, now, marker(now))
    assert (full.taken, full.reason, full.count) == (False, "concurrency", 2)
    other = CallLimits("segmind", concurrency=1)
    assert (await store.take_slot("other", other, now, marker(now))).taken

    # "a" is accepted (submitted, no result yet): still unfinished.
    changes = {"status": TaskStatus.SUBMITTED, "sending_at": None}
    assert await store.update_task("a", frozenset({"queued"}), changes) is not None
    assert (await store.take_slot("c", limits, now, marker(now))).reason == "concurrency"
    # "a" has its result: finished at the provider, so a slot is free.
    await store.update_task("a", frozenset({"submitted"}), {"result": b"{}"})
    assert (await store.take_slot("c", limits, now, marker(now))).taken


async def test_the_rate_window_is_shared_and_slides(store: Store) -> None:
    limits = CallLimits("eachlabs", per_window=3, window=10.0)
    start = 1000.0
    assert [await store.take_call(limits, start + i) for i in range(3)] == [None] * 3
    # Full until the first call leaves the window.
    assert await store.take_call(limits, start + 5) == start + 10
    await add_task(store, "t")
    waiting = await store.take_slot("t", limits, start + 5, marker(start + 5))
    assert (waiting.taken, waiting.reason, waiting.retry_at) == (False, "rate", start + 10)
    assert (await store.get_task("t")).sending_at is None  # type: ignore[union-attr]
    assert await store.take_call(limits, start + 10) is None
    assert await store.take_call(limits, start + 10.5) == start + 11
    assert await store.take_call(CallLimits("segmind", per_window=1), start) is None


async def test_leases_are_renewed_only_while_held(store: Store) -> None:
    for name in ("held", "lapsed"):
        await add_task(store, name)
    now = time.time()
    assert {t.id for t in await store.claim_tasks(now, 5.0, 10)} == {"held", "lapsed"}
    assert await store.renew_leases(["held"], now + 1, now + 6) == 1
    # "lapsed" ran out: it may be another worker's by now, so it is never taken back.
    assert await store.renew_leases(["lapsed"], now + 5.5, now + 10.5) == 0
    assert [t.id for t in await store.claim_tasks(now + 5.5, 5.0, 10)] == ["lapsed"]
