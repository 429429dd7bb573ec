"""SSE over a real uvicorn on a loopback port (ASGITransport would buffer the stream)."""

import asyncio
import socket
import time

import pytest

from hub.store.base import EventQuery
from tests.helpers import AUTH, live_hub, stream, until


async def new_channel(http, live):
    response = await http.post(f"{live.url}/v1/channels", headers=AUTH)
    assert response.status_code == 201
    return response.json()


async def post(http, url, body):
    response = await http.post(url, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_tour(live, http):
    channel = await new_channel(http, live)
    async with stream(http, channel["stream_url"], AUTH) as sse:
        first = await sse.next()
        assert first.retry == 2000
        assert sse.response.headers["content-type"].startswith("text/event-stream")
        assert sse.response.headers["cache-control"] == "no-store"
        await post(http, channel["callback_url"], {"task_id": "job-1", "n": 1})
        [event] = await sse.events(1)
        assert event.event == "callback.received" and event.id == "1"
        assert event.json["body"] == {"task_id": "job-1", "n": 1}
        assert event.json["task_id"] == "job-1"

    for n in (2, 3):
        await post(http, channel["callback_url"], {"task_id": f"job-{n}", "n": n})

    # Reconnect after event 1: exactly 2 and 3, then live.
    async with stream(http, channel["stream_url"], {**AUTH, "last-event-id": "1"}) as sse:
        replayed = await sse.events(2)
        assert [e.id for e in replayed] == ["2", "3"]
        await post(http, channel["callback_url"], {"n": 4})
        [live_event] = await sse.events(1)
        assert live_event.id == "4"

    # The query parameter does the same for clients that cannot set headers.
    async with stream(http, channel["stream_url"] + "?last_event_id=3", AUTH) as sse:
        [event] = await sse.events(1)
        assert event.id == "4"

    # The watch URL needs no key.
    async with stream(http, channel["watch_url"] + "&last_event_id=2", None) as sse:
        assert [e.id for e in await sse.events(2)] == ["3", "4"]

    lookup = await http.get(
        f"{live.url}/v1/channels/{channel['id']}/tasks/job-2?wait=30", headers=AUTH
    )
    assert lookup.json()["body"]["n"] == 2


async def test_filters_by_task_id_and_types(live, http):
    channel = await new_channel(http, live)
    for n, task in enumerate(["a", "b", "a"]):
        await post(http, channel["callback_url"], {"task_id": task, "n": n})
    url = channel["stream_url"] + "?last_event_id=0&task_id=a"
    async with stream(http, url, AUTH) as sse:
        assert [e.json["body"]["n"] for e in await sse.events(2)] == [0, 2]
    url = channel["stream_url"] + "?last_event_id=0&types=task.succeeded,callback.received"
    async with stream(http, url, AUTH) as sse:
        assert len(await sse.events(3)) == 3


async def read_all(http, url, last: int, until_id: int) -> list[int]:
    """A client that reads until it has ``until_id``, reconnecting with Last-Event-ID
    whenever the hub ends its stream, as an EventSource does."""
    seen: list[int] = []
    while last < until_id:
        async with stream(http, url, {**AUTH, "last-event-id": str(last)}) as sse:
            try:
                while last < until_id:
                    frame = await sse.next(10)
                    if frame.id is not None:
                        last = int(frame.id)
                        seen.append(last)
            except EOFError:
                continue
    return seen


@pytest.fixture
def settings(make_settings):
    # Small pages and queues, so a flood crosses the replay/live seam many times.
    return make_settings(replay_page_size=7, subscriber_queue_size=16, heartbeat_seconds=0.05)


async def test_replay_at_the_seam_while_callbacks_keep_arriving(live, http):
    channel = await new_channel(http, live)
    total, senders = 600, 24

    async def sender(k):
        for i in range(k, total, senders):
            await post(http, channel["callback_url"], {"i": i})

    flood = asyncio.gather(*(sender(k) for k in range(senders)))
    # Join mid-flood from an id already behind us.
    await until(lambda: live.state.store.commits > 5, timeout=20)
    seen = await asyncio.wait_for(read_all(http, channel["stream_url"], 3, total), 60)
    await flood
    assert seen == list(range(4, total + 1))  # every event once, in order, no gap


async def test_heartbeats_keep_an_idle_stream_alive(live, http):
    channel = await new_channel(http, live)
    async with stream(http, channel["stream_url"], AUTH) as sse:
        await sse.next()  # retry hint
        frame = await sse.next(5)
        assert frame.comments == [""] and not frame.data


async def test_stream_gap_when_history_was_pruned(live, http):
    channel = await new_channel(http, live)
    for n in range(3):
        await post(http, channel["callback_url"], {"n": n})
    await live.state.store.prune(time.time() + 1)
    async with stream(http, channel["stream_url"], {**AUTH, "last-event-id": "1"}) as sse:
        await sse.next()  # retry hint
        gap = await sse.next()
        assert gap.event == "stream.gap" and gap.id is None
        assert gap.json == {"last_event_id": 1, "pruned_through": 3}
        await post(http, channel["callback_url"], {"n": 3})
        [event] = await sse.events(1)
        assert event.id == "4"
    # A subscriber already past the pruned ids is not told of a gap.
    async with stream(http, channel["stream_url"], {**AUTH, "last-event-id": "3"}) as sse:
        await sse.next()
        [event] = await sse.events(1)
        assert event.id == "4"


async def test_streams_end_promptly_on_shutdown(make_settings, http):
    async with live_hub(make_settings(heartbeat_seconds=60)) as hub:
        channel = await new_channel(http, hub)
        async with stream(http, channel["stream_url"], AUTH) as sse:
            await sse.next()
            # What the server's signal handler calls before uvicorn waits for connections
            # (the real SIGTERM is exercised against a `hub serve` process in test_process).
            hub.state.begin_shutdown()
            with pytest.raises(EOFError):
                await sse.next(5)


async def test_a_stalled_subscriber_does_not_delay_a_live_one(make_settings, http):
    settings = make_settings(subscriber_queue_size=8, heartbeat_seconds=60, send_timeout_seconds=1)
    async with live_hub(settings) as hub:
        channel = await new_channel(http, hub)
        host, port = hub.url.removeprefix("http://").split(":")
        path = channel["stream_url"].removeprefix(hub.url)
        # A client that connects and never reads, with a tiny receive buffer.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, int(port)))
        stalled.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {AUTH['authorization'][7:]}"
            "\r\n\r\n".encode()
        )
        await until(lambda: hub.state.broker.subscriber_count == 1)
        big = "x" * 60_000
        total = 60
        async with stream(http, channel["stream_url"], AUTH) as fast:
            await until(lambda: hub.state.broker.subscriber_count == 2)
            received: list[int] = []

            async def read():
                while len(received) < total:
                    frame = await fast.next(10)
                    if frame.id:
                        received.append(int(frame.id))

            reader = asyncio.create_task(read())
            for n in range(total):
                await post(http, channel["callback_url"], {"n": n, "pad": big})
            await asyncio.wait_for(reader, 20)
            assert received == list(range(1, total + 1))
            # The stalled one overflowed and was dropped; the live one is still subscribed.
            await until(lambda: hub.state.broker.subscriber_count == 1, timeout=10)
        stalled.close()


async def test_a_trickling_body_is_cut_off_with_408(make_settings, http):
    async with live_hub(make_settings(body_timeout_seconds=0.5)) as hub:
        channel = await new_channel(http, hub)
        host, port = hub.url.removeprefix("http://").split(":")
        path = channel["callback_url"].removeprefix(hub.url)
        reader, writer = await asyncio.open_connection(host, int(port))
        # Promise 1,000 bytes, send 10, then stop: the hub must not wait forever.
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: 1000\r\n\r\n".encode()
            + b'{"a": 1234'
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408")
        writer.close()
        assert await hub.state.store.events_after(EventQuery(channel_id=channel["id"]), 0, 10) == []
