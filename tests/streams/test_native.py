"""Live streams written by the broker straight to their connections (hub.web.protocol is
their Carrier): the bytes on the wire, no task per stream, flow control, the end of a
stream and keep-alive after it. Raw sockets against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from hub import logs
from tests.helpers import AUTH, live_hub, until


@pytest.fixture
def settings(make_settings):
    return make_settings(heartbeat_seconds=60)


async def new_channel(http, hub) -> dict[str, str]:
    response = await http.post(f"{hub.url}/v1/channels", headers=AUTH)
    assert response.status_code == 201
    return response.json()


async def open_stream(
    hub, channel, extra: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    host, port = hub.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    path = channel["stream_url"].removeprefix(hub.url)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['authorization']}\r\n{extra}\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


async def shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def carried(hub, channel_id: str) -> int:
    """Subscriptions of the channel that a stream's connection takes events from."""
    subscribers = hub.state.broker._by_channel.get(channel_id, ())
    return sum(1 for s in subscribers if s.sink is not None)


async def test_frames_go_out_as_chunks_and_the_end_leaves_the_connection_usable(live, http):
    channel = await new_channel(http, live)
    reader, writer, head = await open_stream(live, channel)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding: chunked" in head.lower() and b"x-request-id:" in head.lower()
    retry = b"retry: 2000\n\n"
    chunk = b"%x\r\n%b\r\n" % (len(retry), retry)
    assert await asyncio.wait_for(reader.readexactly(len(chunk)), 10) == chunk
    await until(lambda: carried(live, channel["id"]) == 1)
    response = await http.post(channel["callback_url"], json={"n": 1})
    assert response.status_code == 200
    size = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    frame = await reader.readexactly(int(size, 16) + 2)
    assert frame.startswith(b"id: 1\nevent: callback.received\ndata: {") and frame.endswith(
        b"}\n\n\r\n"
    )
    # Revoking (or any end) sends the body's last chunk; the connection serves on.
    live.state.streams.end_for(frozenset(live.state.streams.by_owner))
    assert await asyncio.wait_for(reader.readexactly(5), 10) == b"0\r\n\r\n"
    assert carried(live, channel["id"]) == 0 and not live.state.streams.open
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    again = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert again.startswith(b"HTTP/1.1 200")
    await shut(writer)


async def test_live_streams_hold_no_task_each(live, http):
    channel = await new_channel(http, live)
    before = len(asyncio.all_tasks())
    streams = [await open_stream(live, channel) for _ in range(20)]
    await until(lambda: carried(live, channel["id"]) == 20)
    await until(lambda: len(asyncio.all_tasks()) < before + 5)
    await http.post(channel["callback_url"], json={"n": 1})
    for reader, _, _ in streams:
        await asyncio.wait_for(reader.readuntil(b"id: 1\n"), 10)
    for _, writer, _ in streams:
        await shut(writer)
    # A client that hangs up is forgotten at once.
    await until(lambda: carried(live, channel["id"]) == 0 and not live.state.streams.open)


async def test_a_replay_then_live_with_no_gap(live, http):
    channel = await new_channel(http, live)
    for n in range(3):
        await http.post(channel["callback_url"], json={"n": n})
    reader, writer, _ = await open_stream(live, channel, "Last-Event-ID: 1\r\n")
    await until(lambda: carried(live, channel["id"]) == 1)
    await http.post(channel["callback_url"], json={"n": 3})
    seen = b""
    while seen.count(b"\nid: ") < 3:
        seen += await asyncio.wait_for(reader.read(65536), 10)
    assert [line for line in seen.split(b"\n") if line.startswith(b"id: ")] == [
        b"id: 2",
        b"id: 3",
        b"id: 4",
    ]
    await shut(writer)


async def test_a_heartbeat_is_a_chunk_of_its_own(make_settings, http):
    async with live_hub(make_settings(heartbeat_seconds=0.05)) as hub:
        channel = await new_channel(http, hub)
        reader, writer, _ = await open_stream(hub, channel)
        await until(lambda: carried(hub, channel["id"]) == 1)
        data = b""
        while b"4\r\n: \n\n\r\n" not in data:
            data += await asyncio.wait_for(reader.read(4096), 10)
        await shut(writer)


async def test_a_connection_that_stops_taking_writes_is_cut_off(make_settings, http):
    settings = make_settings(
        heartbeat_seconds=60, send_timeout_seconds=0.5, subscriber_queue_size=10_000
    )
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(logs._WithRequestId())
    sse_log = logging.getLogger("hub.streams.sse")
    sse_log.addHandler(handler)
    sse_log.setLevel(logging.INFO)
    async with live_hub(settings) as hub:
        channel = await new_channel(http, hub)
        _reader, writer, _ = await open_stream(hub, channel, "X-Request-ID: stream-7\r\n")
        await until(lambda: carried(hub, channel["id"]) == 1)
        # Never read again: the kernel's buffers fill, the transport pauses, the clock cuts.
        for n in range(80):
            await http.post(channel["callback_url"], json={"n": n, "pad": "x" * 60_000})
        await until(lambda: not hub.state.streams.open, timeout=20)
        assert carried(hub, channel["id"]) == 0
        sse_log.removeHandler(handler)
        [cut] = [r for r in records if "stopped reading" in r.getMessage()]
        assert getattr(cut, "request_id", None) == "stream-7"  # the stream's own request's
        await shut(writer)
