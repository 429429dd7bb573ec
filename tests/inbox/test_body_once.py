"""A callback's body is kept once, in its delivery: the event's row refers to it, and the
frames a stream sends live, replays after Last-Event-ID and sends in smee's format are the
same bytes either way, whatever the body (on whichever store the suite runs)."""

import asyncio

import msgspec
import pytest

from hub.store.base import EventQuery
from tests.helpers import AUTH, query_store

MAX_EVENT_BODY = 200

BODIES = [
    (b'{"task_id":"t-1","n":1,"s":"\xc3\xa9"}', "application/json"),  # compact: verbatim
    (b'{"a": 1,   "b": [1,2], "c": "\\u00e9\\n"}', "application/json"),  # re-encoded
    (b'["x",{"y":null}]', ""),  # JSON by its first byte
    (b"plain words\nand a line", "text/plain"),
    (b"{not json", "application/json"),  # claims JSON, kept as text
    (b"\xff\xfe\x00binary", "application/octet-stream"),  # base64
    (b"a=1&b=2&a=3", "application/x-www-form-urlencoded"),  # a form: inline
    (b'{"big":"' + b"x" * MAX_EVENT_BODY + b'"}', "application/json"),  # truncated
]


@pytest.fixture
def settings(make_settings):
    return make_settings(max_event_body_bytes=MAX_EVENT_BODY)


class Frames:
    """The frames that carry an id, off a stream, as the bytes sent."""

    def __init__(self, response) -> None:
        self._raw = response.aiter_raw()
        self._buffer = b""

    async def started(self) -> None:
        # Subscribed once the stream's first bytes (its retry hint) arrived.
        self._buffer += await anext(self._raw)

    async def next(self, count: int, timeout: float = 10.0) -> list[bytes]:
        frames: list[bytes] = []
        async with asyncio.timeout(timeout):
            while True:
                while b"\n\n" in self._buffer and len(frames) < count:
                    frame, self._buffer = self._buffer.split(b"\n\n", 1)
                    if frame.startswith(b"id: "):
                        frames.append(frame + b"\n\n")
                if len(frames) == count:
                    return frames
                self._buffer += await anext(self._raw)


async def live_and_replayed(http, url: str, callback_url: str) -> tuple[list[bytes], list[bytes]]:
    async with http.stream("GET", url, headers=AUTH) as response:
        assert response.status_code == 200
        stream = Frames(response)
        await stream.started()
        for body, content_type in BODIES:
            headers = {"content-type": content_type} if content_type else {}
            posted = await http.post(callback_url, content=body, headers=headers)
            assert posted.status_code == 200, posted.text
        live = await stream.next(len(BODIES))
    async with http.stream("GET", url, headers={**AUTH, "last-event-id": "0"}) as response:
        replayed = await Frames(response).next(len(BODIES))
    return live, replayed


async def new_channel(http, live):
    response = await http.post(f"{live.url}/v1/channels", headers=AUTH)
    assert response.status_code == 201
    return response.json()


async def test_live_and_replayed_frames_are_the_same_bytes(live, http):
    channel = await new_channel(http, live)
    frames, replayed = await live_and_replayed(http, channel["stream_url"], channel["callback_url"])
    assert replayed == frames
    shown = [msgspec.json.decode(f.split(b"data: ", 1)[1].split(b"\n", 1)[0]) for f in frames]
    assert shown[0]["body"] == {"task_id": "t-1", "n": 1, "s": "é"}
    assert shown[1]["body"] == {"a": 1, "b": [1, 2], "c": "é\n"}
    assert shown[3]["body"] == "plain words\nand a line"
    assert shown[5]["body_encoding"] == "base64"
    assert shown[6]["body"] == {"a": ["1", "3"], "b": "2"}
    assert shown[7]["body"] is None and shown[7]["body_truncated"] is True


async def test_smee_frames_are_the_same_bytes_live_and_replayed(live, http):
    channel = await new_channel(http, live)
    url = channel["watch_url"] + "&format=smee"
    frames, replayed = await live_and_replayed(http, url, channel["callback_url"])
    assert replayed == frames
    assert b'"body":{"task_id":"t-1","n":1,"s":"\xc3\xa9"}' in frames[0]


async def test_the_event_row_refers_to_the_body_it_does_not_repeat(live, http):
    channel = await new_channel(http, live)
    body = b'{"task_id":"once","pad":"' + b"p" * 100 + b'"}'
    posted = await http.post(
        channel["callback_url"], content=body, headers={"content-type": "application/json"}
    )
    assert posted.status_code == 200
    store = live.state.store
    data, body_at, form = await query_store(store, "SELECT data, body_at, body_form FROM events")
    assert body not in bytes(data) and b"p" * 100 not in bytes(data)
    assert bytes(data)[body_at : body_at + 4] == b"null"
    assert form == "raw"
    [event] = await store.events_after(EventQuery(channel_id=channel["id"]), 0, 10)
    assert msgspec.json.decode(event.data)["body"] == msgspec.json.decode(body)


async def test_an_event_stored_whole_replays_as_it_was(live, http):
    """Rows written before bodies were kept once hold the body inline: read as they are."""
    channel = await new_channel(http, live)
    async with http.stream("GET", channel["stream_url"], headers=AUTH) as response:
        stream = Frames(response)
        await stream.started()
        posted = await http.post(channel["callback_url"], json={"task_id": "old", "n": 2})
        assert posted.status_code == 200
        [frame] = await stream.next(1)
    store = live.state.store
    [event] = await store.events_after(EventQuery(channel_id=channel["id"]), 0, 10)
    whole = event.data
    if hasattr(store, "pool"):
        await store.pool.execute(
            "UPDATE events SET data = $1, body_at = NULL, body_form = NULL", whole
        )
    else:

        def op(db, tx):
            db.execute("UPDATE events SET data = ?, body_at = NULL, body_form = NULL", (whole,))

        await store._write().run(op)
    assert (await query_store(store, "SELECT body_at FROM events"))[0] is None
    async with http.stream(
        "GET", channel["stream_url"], headers={**AUTH, "last-event-id": "0"}
    ) as response:
        assert await Frames(response).next(1) == [frame]


async def test_a_token_verified_before_is_still_refused_once_it_expires(client, state, monkeypatch):
    """The fast path keeps the claims of tokens it verified; their expiry is checked on
    every callback all the same."""
    import time

    from hub.access.tokens import CALLBACK, Claims
    from hub.web.routes import callbacks

    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    expires = int(time.time()) + 60
    token = state.signer.issue(CALLBACK, Claims(channel["id"], expires))
    assert (await client.post(f"/callbacks/{token}", json={"n": 1})).status_code == 200

    class Later:
        @staticmethod
        def time() -> float:
            return expires + 1.0

    monkeypatch.setattr(callbacks, "time", Later)
    response = await client.post(f"/callbacks/{token}", json={"n": 2})
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "expired_token"
