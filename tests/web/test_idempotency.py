"""Idempotency-Key on POST /v1/tasks, in-process and on both stores: a retry with the same
key and body gets the first answer and makes nothing; another body is a 422; a request
while the first holds the key is a 409; keys are per API key; records survive a restart
and go after their TTL."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from asgi_lifespan import LifespanManager

from hub.access.keys import key_hash, tenant
from hub.errors import Conflict
from hub.store.base import IdempotencyClaim, IdempotencyRecord
from hub.web.app import create_app
from tests.helpers import (
    AUTH,
    KEY,
    OTHER_AUTH,
    data_url,
    make_png,
    query_store,
    request_body,
    until,
)

KEY_HEADER = "idempotency-key"
OWNER = tenant(key_hash(KEY))
SEGMIND = (("HUB_SEGMIND_API_KEY", "k"), ("HUB_SEGMIND_URL", "http://127.0.0.1:9"))


@pytest.fixture
def settings(make_settings):
    # No worker: the tasks stay queued, so what is counted is what the requests made.
    return make_settings(extra_env=SEGMIND, worker_concurrency=0, allow_loopback_urls=True)


def body(prompt: str = "edit", images: list[str] | None = None) -> dict[str, object]:
    return {
        "provider": "segmind",
        "input": {"prompt": prompt, "images": images or [data_url(make_png())]},
    }


def keyed(key: str, auth: dict[str, str] = AUTH) -> dict[str, str]:
    return {**auth, KEY_HEADER: key}


async def task_count(store) -> int:
    row = await query_store(store, "SELECT count(*) FROM tasks")
    return int(row[0])


async def test_the_same_key_and_body_gets_the_first_answer_and_makes_nothing(client, state):
    sent = body()
    first = await client.post("/v1/tasks", json=sent, headers=keyed("k-1"))
    again = await client.post("/v1/tasks", json=sent, headers=keyed("k-1"))
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert await task_count(state.store) == 1
    # Without a key, every request is a new task, as before.
    assert (await client.post("/v1/tasks", json=sent, headers=AUTH)).status_code == 202
    assert await task_count(state.store) == 2


async def test_the_same_key_with_another_body_is_a_422(client, state):
    assert (await client.post("/v1/tasks", json=body("a"), headers=keyed("k"))).is_success
    reused = await client.post("/v1/tasks", json=body("b"), headers=keyed("k"))
    assert reused.status_code == 422
    error = reused.json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["field"] == "Idempotency-Key"
    assert await task_count(state.store) == 1


async def test_keys_belong_to_one_api_key(client, state):
    sent = body()
    mine = await client.post("/v1/tasks", json=sent, headers=keyed("shared"))
    theirs = await client.post("/v1/tasks", json=sent, headers=keyed("shared", OTHER_AUTH))
    assert mine.status_code == theirs.status_code == 202
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    # ...and another body under the same key is no conflict across keys either.
    other = await client.post("/v1/tasks", json=body("x"), headers=keyed("mine", OTHER_AUTH))
    assert other.status_code == 202
    assert await task_count(state.store) == 3


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "del\x7f"])
async def test_a_bad_key_is_a_400_naming_the_header(client, state, key):
    answer = await client.post("/v1/tasks", json=body(), headers=keyed(key))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "Idempotency-Key"
    assert await task_count(state.store) == 0


async def test_the_longest_key_is_taken(client):
    sent = body()
    first = await client.post("/v1/tasks", json=sent, headers=keyed("x" * 255))
    again = await client.post("/v1/tasks", json=sent, headers=keyed("x" * 255))
    assert first.status_code == 202 and again.headers["idempotent-replayed"] == "true"


async def test_a_refused_request_keeps_nothing(client, state):
    bad = await client.post("/v1/tasks", json=body(images=["blob_nope"]), headers=keyed("k"))
    assert bad.status_code == 422
    # The key is free: another (good) body under it is a new task, not a reuse.
    good = await client.post("/v1/tasks", json=body(), headers=keyed("k"))
    assert good.status_code == 202 and "idempotent-replayed" not in good.headers


class SlowImage:
    """An image server that holds each request until ``release`` is set."""

    def __init__(self) -> None:
        self.asked = 0
        self.release = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await request_body(receive)
        self.asked += 1
        await self.release.wait()
        headers = [(b"content-type", b"image/png")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": make_png()})


async def test_a_second_request_while_the_first_holds_the_key_is_a_409(client, state):
    import socket

    import uvicorn

    image = SlowImage()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/a.png"
    server = uvicorn.Server(uvicorn.Config(image, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        sent = body(images=[url])
        first = asyncio.create_task(client.post("/v1/tasks", json=sent, headers=keyed("k")))
        await until(lambda: image.asked == 1, timeout=10)  # the first holds the key now
        second = await client.post("/v1/tasks", json=sent, headers=keyed("k"))
        assert second.status_code == 409, second.text
        assert second.json()["error"]["code"] == "idempotency_key_in_use"
        assert second.headers["retry-after"] == "1"
        image.release.set()
        answered = await asyncio.wait_for(first, 10)
        assert answered.status_code == 202
        third = await client.post("/v1/tasks", json=sent, headers=keyed("k"))
        assert third.headers["idempotent-replayed"] == "true"
        assert third.content == answered.content
    finally:
        image.release.set()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        sock.close()
    assert image.asked == 1 and await task_count(state.store) == 1


async def test_many_requests_at_once_with_one_key_make_one_task(client, state):
    sent = body()
    answers = await asyncio.gather(
        *(client.post("/v1/tasks", json=sent, headers=keyed("burst")) for _ in range(8))
    )
    made = [a for a in answers if a.status_code == 202 and "idempotent-replayed" not in a.headers]
    assert len(made) == 1
    for answer in answers:
        assert answer.status_code in (202, 409), answer.text
        if answer.status_code == 202:
            assert answer.json()["id"] == made[0].json()["id"]
    assert await task_count(state.store) == 1


async def test_a_replay_after_a_restart(settings):
    sent = body()
    answers = []
    for _ in range(2):
        app = create_app(settings)
        async with LifespanManager(app) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
                answers.append(await c.post("/v1/tasks", json=sent, headers=keyed("restart")))
                count = await task_count(app.state.hub.store)
    assert answers[0].status_code == answers[1].status_code == 202
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert answers[1].content == answers[0].content
    assert count == 1


async def test_a_task_made_but_not_answered_is_answered_from_the_task(client, state, monkeypatch):
    """The request ended between making its task and keeping its answer: a retry makes no
    second task, and gets the answer made again from the task."""

    async def lost(*args: object) -> None:
        raise OSError("the answer was not kept")

    sent = body()
    store = state.store
    with monkeypatch.context() as patch:
        patch.setattr(store, "finish_idempotency", lost)
        with pytest.raises(OSError):
            await client.post("/v1/tasks", json=sent, headers=keyed("half"))
    assert await task_count(store) == 1
    again = await client.post("/v1/tasks", json=sent, headers=keyed("half"))
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    (task,) = await store.list_tasks(OWNER, 5)
    assert again.json()["id"] == task.id and again.json()["status"] == "queued"
    assert await task_count(store) == 1


def record(owner: str, key: str, token: str, *, lease: float, created: float | None = None):
    now = time.time()
    return IdempotencyRecord(owner, key, b"digest", token, now + lease, created or now)


async def test_a_lapsed_reservation_is_taken_over_and_its_holder_makes_nothing(state):
    """A request that held a key past its lease (its replica died, or it stalled) loses it
    to the next one; if it then tries to make its task, nothing is written."""
    store, now = state.store, time.time()
    stale = await store.reserve_idempotency(record("o", "k", "old", lease=-1), now, now - 3600)
    assert stale.token == "old"
    live = await store.reserve_idempotency(record("o", "k", "new", lease=60), now, now - 3600)
    assert live.token == "new"
    # While the new lease runs, nobody else takes it.
    third = await store.reserve_idempotency(record("o", "k", "3rd", lease=60), now, now - 3600)
    assert third.token == "new"
    with pytest.raises(Conflict):
        await state.engine.create(
            "o", "segmind", None, b"{}", claim=IdempotencyClaim("o", "k", "old")
        )
    assert await task_count(store) == 0
    made = await state.engine.create(
        "o", "segmind", None, b"{}", claim=IdempotencyClaim("o", "k", "new")
    )
    assert (await store.get_task(made.id)) is not None
    # Bound once: the same claim cannot make a second task.
    with pytest.raises(Conflict):
        await state.engine.create(
            "o", "segmind", None, b"{}", claim=IdempotencyClaim("o", "k", "new")
        )
    assert await task_count(store) == 1


async def test_records_expire_after_the_ttl_and_are_pruned(client, state, settings):
    store, now = state.store, time.time()
    ttl = settings.idempotency_ttl_seconds
    old = record(OWNER, "old", "t", lease=60, created=now - ttl - 10)
    assert (await store.reserve_idempotency(old, now, now - ttl)).token == "t"
    # Past its TTL the key is new again: another body makes a task, not a 422.
    answer = await client.post("/v1/tasks", json=body(), headers=keyed("old"))
    assert answer.status_code == 202 and "idempotent-replayed" not in answer.headers
    gone = record("o", "gone", "t", lease=60, created=now - ttl - 10)
    await store.reserve_idempotency(gone, now, now - ttl)
    # The hub's own pruning loop may get to it first: either way it is gone after this.
    assert await store.prune_idempotency(now - ttl) in (0, 1)
    row = await query_store(store, "SELECT count(*) FROM idempotency_keys")
    assert int(row[0]) == 1  # the fresh one stays


async def test_two_replicas_on_one_postgres_make_one_task_for_one_key(make_settings, pg_url):
    settings = make_settings(
        extra_env=SEGMIND, worker_concurrency=0, database_url=pg_url, allow_loopback_urls=True
    )
    apps = [create_app(settings), create_app(settings)]
    async with LifespanManager(apps[0]) as one, LifespanManager(apps[1]) as two:
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=m.app), base_url="http://hub.test")
            for m in (one, two)
        ]
        sent = body()
        answers = await asyncio.gather(
            *(
                clients[n % 2].post("/v1/tasks", json=sent, headers=keyed("replicas"))
                for n in range(8)
            )
        )
        for c in clients:
            await c.aclose()
        count = await task_count(apps[0].state.hub.store)
    assert {a.status_code for a in answers} <= {202, 409}
    assert len({a.json()["id"] for a in answers if a.status_code == 202}) == 1
    assert count == 1
