"""What every store must do alike, run against SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.enums import EventType, TaskStatus
from hub.store.base import ApiKey, Channel, Delivery, Endpoint, Event, NewEvent, Store, TaskRecord
from hub.store.postgres import PostgresStore
from hub.store.sqlite import SQLiteStore
from tests.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    published: list[Event] = []
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "hub.db", published.extend, synchronous="NORMAL")
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    async for url in fresh_database():
        postgres = PostgresStore(url, published.extend)
        await postgres.open()
        yield postgres
        await postgres.close()


def api_key(key_id: str, secret: str, label: str | None = None) -> ApiKey:
    digest = hashlib.sha256(secret.encode()).digest()
    return ApiKey(key_id, digest.hex()[:32], digest, label, time.time())


async def test_api_keys_are_found_by_hash_until_revoked(store: Store) -> None:
    first, second = api_key("key_1", "secret-1", "ci"), api_key("key_2", "secret-2")
    await store.add_api_key(first)
    await store.add_api_key(second)
    assert await store.api_key_owner(first.hash) == first.owner
    assert await store.api_key_owner(hashlib.sha256(b"nope").digest()) is None
    assert [k.id for k in await store.list_api_keys()] == ["key_1", "key_2"]

    assert await store.revoke_api_key("key_1", time.time())
    assert not await store.revoke_api_key("key_1", time.time())  # already revoked
    assert not await store.revoke_api_key("key_9", time.time())  # no such key
    assert await store.api_key_owner(first.hash) is None
    assert await store.api_key_owner(second.hash) == second.owner
    listed = {k.id: k for k in await store.list_api_keys()}
    assert listed["key_1"].revoked_at is not None and listed["key_1"].label == "ci"
    assert listed["key_2"].revoked_at is None


def endpoint(endpoint_id: str, channel_id: str | None = None, task_id: str | None = None):
    return Endpoint(
        endpoint_id, "owner", f"https://example.com/{endpoint_id}", "whsec_AAAA",
        channel_id, task_id, time.time(),
    )  # fmt: skip


def callback(i: int, channel_id: str = "ch") -> Delivery:
    body = b'{"i": %d}' % i
    return Delivery(
        channel_id, hashlib.sha256(b"token").digest(), hashlib.sha256(body).digest(),
        "application/json", b"[]", body, time.time(), None, None, body,
    )  # fmt: skip


async def test_webhooks_get_events_stored_after_they_were_added_once_each(store: Store) -> None:
    await store.add_delivery(callback(0))  # before any endpoint: sent nowhere
    on_channel = await store.add_endpoint(endpoint("wh_1", channel_id="ch"))
    on_task = await store.add_endpoint(endpoint("wh_2", task_id="t1"))
    assert on_channel.after_event_id == 1 and on_task.after_event_id == 1
    await store.add_delivery(callback(1))
    await store.add_delivery(callback(2, channel_id="elsewhere"))
    task_event = NewEvent("task.queued", b"{}", channel_id="ch", task_id="t1")
    await store.create_task(
        TaskRecord(
            "t1", "owner", "acedata", TaskStatus.QUEUED, b"{}", "ch", None, None, b"[]", None, None,
            0, None, time.time() + 60, time.time(), time.time(),
        ),
        task_event,
    )  # fmt: skip
    await store.create_task(
        TaskRecord(
            "t2", "owner", "acedata", TaskStatus.QUEUED, b"{}", "ch", None, None, b"[]", None, None,
            0, None, time.time() + 60, time.time(), time.time(),
        ),
        NewEvent("webhook.failing", b"{}", channel_id="ch"),
    )  # fmt: skip

    now = time.time()
    # Five events, two at a time: a full page says more may wait.
    assert [await store.enqueue_webhooks(now, 2) for _ in range(3)] == [True, True, False]
    assert not await store.enqueue_webhooks(now, 2)  # nothing new: nothing twice
    jobs = await store.claim_webhooks(now, 30.0, 10)
    sent = sorted((job.endpoint.id, job.event.id, job.event.type) for job in jobs)
    # Event 2 on the channel; event 4 (the task's) to both; webhook.* events to none.
    assert sent == [
        ("wh_1", 2, "callback.received"),
        ("wh_1", 4, "task.queued"),
        ("wh_2", 4, "task.queued"),
    ]
    assert await store.claim_webhooks(now, 30.0, 10) == []  # leased
    listed = await store.list_endpoints("owner")
    assert [(e.id, e.pending) for e in listed] == [("wh_1", 2), ("wh_2", 1)]
    assert await store.list_endpoints("someone else") == []


async def test_a_webhook_attempt_is_settled_as_delivered_retried_or_given_up(store: Store) -> None:
    await store.add_endpoint(endpoint("wh_1", channel_id="ch"))
    for i in range(3):
        await store.add_delivery(callback(i))
    now = time.time()
    await store.enqueue_webhooks(now, 100)
    first, second, third = sorted(await store.claim_webhooks(now, 30.0, 10), key=lambda j: j.id)
    assert await store.settle_webhook(first, now, "HTTP 500", now + 5) == 1
    assert await store.settle_webhook(second, now, "timed out", None) == 2  # given up
    assert await store.claim_webhooks(now + 1, 30.0, 10) == []  # the retry is not due yet
    [again] = await store.claim_webhooks(now + 6, 30.0, 10)
    assert again.id == first.id and again.attempts == 1
    assert await store.settle_webhook(again, now + 6, None, None) == 0
    endpoint_now = await store.get_endpoint("wh_1")
    assert endpoint_now is not None
    assert endpoint_now.failures == 0 and endpoint_now.last_error == "timed out"
    assert endpoint_now.last_success_at == now + 6
    assert endpoint_now.pending == 1  # the third, still leased
    assert endpoint_now.format == "standard"
    shaped = await store.add_endpoint(
        dataclasses.replace(endpoint("wh_2", task_id="t"), format="acedata")
    )
    assert (await store.get_endpoint("wh_2")) == shaped and shaped.format == "acedata"
    assert await store.delete_endpoint("wh_1")
    assert not await store.delete_endpoint("wh_1")
    assert await store.get_endpoint("wh_1") is None
    assert await store.claim_webhooks(now + 100, 30.0, 10) == []  # its outbox went too
    del third


async def test_pruning_events_drops_their_webhooks(store: Store) -> None:
    await store.add_endpoint(endpoint("wh_1", channel_id="ch"))
    await store.add_delivery(callback(1))
    await store.enqueue_webhooks(time.time(), 100)
    assert await store.prune(time.time() + 1) == 1
    assert await store.claim_webhooks(time.time(), 30.0, 10) == []
    listed = await store.get_endpoint("wh_1")
    assert listed is not None and listed.pending == 0


async def test_channels_and_tasks_are_listed_per_owner_newest_first(store: Store) -> None:
    for i in range(3):
        await store.create_channel(Channel(f"ch_{i}", "owner", None, 100.0 + i, 10**10))
    await store.create_channel(Channel("ch_x", "other", None, 200.0, 10**10))
    assert [c.id for c in await store.list_channels("owner", 2)] == ["ch_2", "ch_1"]
    for i in range(3):
        record = TaskRecord(
            f"t{i}", "owner", "acedata", TaskStatus.QUEUED, b"{}", None, None, None, b"[]", None, None,
            0, None, 10**10, 100.0 + i, 100.0 + i,
        )  # fmt: skip
        await store.create_task(record, NewEvent("task.queued", b"{}", task_id=f"t{i}"))
    assert [t.id for t in await store.list_tasks("owner", 5)] == ["t2", "t1", "t0"]
    assert await store.task_counts() == {("acedata", "queued"): 3}
    assert await store.list_tasks("other", 5) == []


async def test_an_acedata_endpoint_is_given_only_its_tasks_end(store: Store) -> None:
    await store.add_endpoint(dataclasses.replace(endpoint("wh_a", task_id="t1"), format="acedata"))
    record = TaskRecord(
        "t1", "owner", "acedata", TaskStatus.QUEUED, b"{}", None, None, None, b"[]", None, None,
        0, None, time.time() + 60, time.time(), time.time(),
    )  # fmt: skip
    await store.create_task(record, NewEvent("task.queued", b"{}", task_id="t1"))
    ended = await store.update_task(
        "t1",
        frozenset({"queued"}),
        {"status": "succeeded", "next_at": None},
        [NewEvent("task.submitted", b"{}", task_id="t1"),
         NewEvent("task.succeeded", b"{}", task_id="t1")],
    )  # fmt: skip
    assert ended is not None
    await store.enqueue_webhooks(time.time(), 100)
    jobs = await store.claim_webhooks(time.time(), 30.0, 10)
    assert [job.event.type for job in jobs] == ["task.succeeded"]


async def test_a_renewal_extends_only_the_lease_it_names(store: Store) -> None:
    endpoint = Endpoint("wh_1", "owner", "http://example.com/", "whsec_x", "ch_1", None, 1.0)
    await store.add_endpoint(endpoint)
    await store.add_events([NewEvent(EventType.CALLBACK_RECEIVED, b"{}", "ch_1")])
    await store.enqueue_webhooks(100.0, 10)
    [job] = await store.claim_webhooks(100.0, 15.0, 10)
    assert await store.renew_webhook_leases({job.id: 115.0}, 130.0) == {job.id}
    # Not while held (until 130): not claimable at 120.
    assert await store.claim_webhooks(120.0, 15.0, 10) == []
    # An old holder naming a lease it no longer holds renews nothing.
    assert await store.renew_webhook_leases({job.id: 115.0}, 200.0) == set()
    [again] = await store.claim_webhooks(131.0, 15.0, 10)
    assert again.id == job.id
    await store.settle_webhook(again, 132.0, None, None)
    assert await store.renew_webhook_leases({job.id: 146.0}, 300.0) == set()
