"""Two hubs on one PostgreSQL database, each a real uvicorn on loopback: one consistent
stream whichever replica a callback reaches or a subscriber connects to, and tasks worked
once across them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.helpers import AUTH, LiveHub, data_url, live_hub, make_png, stream, stream_to_end, until
from tests.processes import HubProcess, free_port


@pytest.fixture
async def replicas(make_settings, pg_url) -> AsyncIterator[tuple[LiveHub, LiveHub]]:
    settings = make_settings(database_url=pg_url)
    async with live_hub(settings) as a, live_hub(settings) as b:
        yield a, b


def on(replica: LiveHub | HubProcess, url: str) -> str:
    """The same path on another replica (behind a balancer, any of them may get it)."""
    path = url.split("/", 3)[3]
    return f"{replica.url}/{path}"


async def test_a_callback_to_one_replica_reaches_a_subscriber_on_the_other(replicas, http):
    a, b = replicas
    channel = (await http.post(f"{a.url}/v1/channels", headers=AUTH)).json()
    async with stream(http, on(b, channel["stream_url"]), AUTH) as live:
        await live.next()  # the retry hint: subscribed
        sent = await http.post(channel["callback_url"], json={"n": 1})
        assert sent.status_code == 200
        (event,) = await live.events(1)
        assert event.event == "callback.received" and event.json["body"] == {"n": 1}
    # ...and in the other replica's replay, under the same id.
    async with stream(http, on(b, channel["stream_url"]), {**AUTH, "last-event-id": "0"}) as sse:
        (replayed,) = await sse.events(1)
    assert replayed.id == event.id and replayed.json == event.json


async def test_last_event_id_means_the_same_on_every_replica(replicas, http):
    a, b = replicas
    channel = (await http.post(f"{a.url}/v1/channels", headers=AUTH)).json()
    for n in range(6):
        target = a if n % 2 else b
        assert (await http.post(on(target, channel["callback_url"]), json={"n": n})).is_success
    async with stream(http, channel["stream_url"], {**AUTH, "last-event-id": "0"}) as sse:
        first = await sse.events(3)
    resume = {**AUTH, "last-event-id": str(first[-1].id)}
    async with stream(http, on(b, channel["stream_url"]), resume) as sse:
        rest = await sse.events(3)
    assert [f.json["body"]["n"] for f in first + rest] == list(range(6))
    ids = [int(f.id or 0) for f in first + rest]
    assert ids == sorted(ids) and len(set(ids)) == 6


async def test_a_flood_through_both_replicas_reaches_subscribers_on_both_in_order(replicas, http):
    """24 senders spread over both replicas; one subscriber on each. Each sees every
    callback once, ids strictly increasing: commit order is id order across replicas."""
    a, b = replicas
    channel = (await http.post(f"{a.url}/v1/channels", headers=AUTH)).json()
    per_sender, senders = 25, 24
    total = per_sender * senders

    async def watch(replica: LiveHub) -> list[tuple[int, int]]:
        seen: list[tuple[int, int]] = []
        async with stream(http, on(replica, channel["stream_url"]), AUTH) as sse:
            await sse.next()
            ready.set()
            while len(seen) < total:
                for frame in await sse.events(1, timeout=30):
                    seen.append((int(frame.id or 0), frame.json["body"]["k"]))
        return seen

    async def send(number: int) -> None:
        target = (a, b)[number % 2]
        for i in range(per_sender):
            body = {"k": number * 1000 + i}
            response = await http.post(on(target, channel["callback_url"]), json=body)
            assert response.status_code == 200

    ready = asyncio.Event()
    watchers = [asyncio.create_task(watch(a)), asyncio.create_task(watch(b))]
    await until(lambda: ready.is_set(), timeout=10)
    await asyncio.sleep(0)  # let the second watcher subscribe too
    await until(lambda: all(r.state.broker.subscriber_count for r in (a, b)), timeout=10)
    await asyncio.gather(*(send(n) for n in range(senders)))
    seen_a, seen_b = await asyncio.wait_for(asyncio.gather(*watchers), 60)
    for seen in (seen_a, seen_b):
        ids = [event_id for event_id, _ in seen]
        assert ids == sorted(set(ids)), "an id out of order or twice"
        assert len({k for _, k in seen}) == total
    assert seen_a == seen_b


@contextlib.asynccontextmanager
async def sandbox_process(tmp_path, latency: str = "0.5") -> AsyncIterator[HubProcess]:
    """The providers' emulators in a process of their own: their jobs outlive any replica."""
    sandbox = HubProcess(
        tmp_path, free_port(), command=("sandbox",), extra={"HUB_SANDBOX_LATENCY": latency}
    )
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            await sandbox.ready(http, "/eachlabs/_sandbox/faults")
        yield sandbox
    finally:
        sandbox.kill()


def provider_env(sandbox: HubProcess) -> tuple[tuple[str, str], ...]:
    return (
        ("HUB_ATLASCLOUD_URL", f"{sandbox.url}/atlascloud"),
        ("HUB_ATLASCLOUD_API_KEY", "key"),
        ("HUB_ATLASCLOUD_FIRST_POLL_AFTER", "0.1"),
        ("HUB_ATLASCLOUD_POLL_INTERVAL", "0.1"),
        ("HUB_ATLASCLOUD_REQUEST_TIMEOUT", "5"),
        ("HUB_TASK_LEASE_SECONDS", "3"),
    )


async def test_tasks_submitted_on_both_replicas_are_each_worked_once(
    make_settings, pg_url, tmp_path, http
):
    async with sandbox_process(tmp_path, latency="0.3") as sandbox:
        settings = make_settings(
            database_url=pg_url, allow_loopback_urls=True, extra_env=provider_env(sandbox)
        )
        async with live_hub(settings) as a, live_hub(settings) as b:
            body = {
                "provider": "atlascloud",
                "input": {"prompt": "p", "images": [data_url(make_png())]},
            }
            created = []
            for n in range(8):
                target = (a, b)[n % 2]
                response = await http.post(f"{target.url}/v1/tasks", json=body, headers=AUTH)
                assert response.status_code == 202, response.text
                created.append(response.json())
            for task in created:
                events = await stream_to_end(http, on(b, task["stream_url"]), AUTH)
                assert events == ["task.queued", "task.submitted", "task.succeeded"]
                record = (await http.get(f"{a.url}/v1/tasks/{task['id']}", headers=AUTH)).json()
                assert record["status"] == "succeeded" and record["attempts"] == 1


# -- replicas as processes, killed -------------------------------------------------------


def folder(parent, name: str):
    """Each replica's own data directory (it holds only the log and generated files)."""
    path = parent / name
    path.mkdir()
    return path


@pytest.mark.process
async def test_a_replica_killed_mid_flood_loses_no_acknowledged_callback(pg_url, tmp_path, http):
    """30 senders over two `hub serve` processes; one is killed with -9 mid-flood. Every
    callback either replica acknowledged is in the survivor's replay, once."""
    extra = {"HUB_DATABASE_URL": pg_url}
    a = HubProcess(folder(tmp_path, "a"), free_port(), extra=extra)
    b = HubProcess(folder(tmp_path, "b"), free_port(), extra=extra)
    try:
        await a.ready(http)
        await b.ready(http)
        channel = (await http.post(f"{a.url}/v1/channels", headers=AUTH)).json()
        acked: set[int] = set()
        counter = iter(range(10**9))

        async def sender(replica: HubProcess) -> None:
            while True:
                i = next(counter)
                try:
                    response = await http.post(on(replica, channel["callback_url"]), json={"i": i})
                except httpx.TransportError:
                    return  # the replica is gone: this one was never acknowledged
                if response.status_code == 200:
                    acked.add(i)
                if len(acked) > 3000:
                    return

        senders = [asyncio.create_task(sender((a, b)[n % 2])) for n in range(30)]
        await until(lambda: len(acked) >= 300, timeout=30)
        a.kill()
        await until(lambda: len(acked) >= 600, timeout=30)  # b goes on alone
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)

        seen: list[int] = []
        headers = {**AUTH, "last-event-id": "0"}
        async with stream(http, on(b, channel["stream_url"]), headers) as sse:
            await sse.next()  # retry hint
            while True:
                frame = await sse.next(10)
                if frame.comments:  # the first heartbeat: the replay is over
                    break
                seen.append(frame.json["body"]["i"])
        assert acked <= set(seen), f"lost {sorted(acked - set(seen))[:10]}"
        assert len(seen) == len(set(seen)), "a callback was stored twice"
    finally:
        for replica in (a, b):
            if replica.proc.poll() is None:
                replica.kill()


@pytest.mark.process
async def test_a_replica_killed_mid_task_leaves_it_to_the_other(pg_url, tmp_path, http):
    """Replica A submits a task and dies while the provider works on it; replica B takes
    the task over (after the lease, if A held one) and finishes it by polling, without a
    second submission."""
    async with sandbox_process(tmp_path, latency="2") as sandbox:
        extra = {"HUB_DATABASE_URL": pg_url, **dict(provider_env(sandbox))}
        extra["HUB_ALLOW_LOOPBACK_URLS"] = "1"
        a = HubProcess(folder(tmp_path, "a"), free_port(), extra=extra)
        b = None
        try:
            await a.ready(http)
            body = {
                "provider": "atlascloud",
                "input": {"prompt": "p", "images": [data_url(make_png())]},
            }
            created = (await http.post(f"{a.url}/v1/tasks", json=body, headers=AUTH)).json()
            async with stream(http, created["stream_url"], AUTH) as sse:
                while (await sse.next(10)).event != "task.submitted":
                    pass
            a.kill()

            # B starts only now, so the task cannot have been B's before A died.
            b = HubProcess(folder(tmp_path, "b"), free_port(), extra=extra)
            await b.ready(http)
            seen = await stream_to_end(http, on(b, created["stream_url"]), AUTH)
            assert seen == ["task.queued", "task.submitted", "task.succeeded"]
            record = (await http.get(f"{b.url}/v1/tasks/{created['id']}", headers=AUTH)).json()
            assert record["status"] == "succeeded" and record["attempts"] == 1
            assert record["outputs"]
        finally:
            for replica in (a, b):
                if replica is not None and replica.proc.poll() is None:
                    replica.kill()
