import base64
import hashlib
import time

import httpx
import orjson
import pytest

from hub.access.tokens import CALLBACK, Claims
from tests.helpers import AUTH, query_store


@pytest.fixture
async def channel(client):
    response = await client.post("/v1/channels", headers=AUTH)
    return response.json()


async def stored_events(state, channel):
    from hub.store.base import EventQuery

    return await state.store.events_after(EventQuery(channel_id=channel["id"]), 0, 100)


async def test_json_callback_is_stored_and_acknowledged(client, state, channel):
    response = await client.post(channel["callback_url"], json={"task_id": "p-1", "ok": True})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "duplicate": False, "event_id": 1}
    [event] = await stored_events(state, channel)
    data = httpx.Response(200, content=event.data).json()
    assert data["channel_id"] == channel["id"]
    assert data["task_id"] == "p-1"
    assert data["body"] == {"task_id": "p-1", "ok": True}
    assert data["content_type"] == "application/json"


async def test_raw_bytes_headers_and_hash_are_kept(client, state, channel):
    body = b'{"a": 1,   "b": [1,2]}'  # odd spacing that re-serialising would lose
    await client.post(
        channel["callback_url"],
        content=body,
        headers={"content-type": "application/json", "x-signature": "sig"},
    )
    sql = "SELECT body, headers, body_sha256 FROM deliveries"
    raw, headers, digest = await query_store(state.store, sql)
    assert raw == body
    assert ["x-signature", "sig"] in orjson.loads(headers)
    assert digest == hashlib.sha256(body).digest()


@pytest.mark.parametrize(
    ("content", "content_type", "expected", "encoding"),
    [
        (b"a=1&b=2&a=3", "application/x-www-form-urlencoded", {"a": ["1", "3"], "b": "2"}, None),
        (b"plain words", "text/plain", "plain words", None),
        (b"{not json", "application/json", "{not json", None),
        (
            b"\xff\xfe\x00",
            "application/octet-stream",
            base64.b64encode(b"\xff\xfe\x00").decode(),
            "base64",
        ),
        (b'{"id": 42}', "", {"id": 42}, None),
        (b'{"x": 1}', "application/vnd.thing+json; charset=utf-8", {"x": 1}, None),
    ],
)
async def test_bodies_are_described_by_their_type(
    client, state, channel, content, content_type, expected, encoding
):
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post(channel["callback_url"], content=content, headers=headers)
    assert response.status_code == 200
    [event] = await stored_events(state, channel)
    data = httpx.Response(200, content=event.data).json()
    assert data["body"] == expected
    assert data.get("body_encoding") == encoding


async def test_byte_identical_retry_is_acknowledged_and_not_published_twice(client, state, channel):
    first = await client.post(channel["callback_url"], content=b'{"n": 1}')
    again = await client.post(channel["callback_url"], content=b'{"n": 1}')
    assert first.json()["duplicate"] is False
    assert again.status_code == 200 and again.json() == {"ok": True, "duplicate": True}
    different = await client.post(channel["callback_url"], content=b'{"n": 1} ')
    assert different.json()["duplicate"] is False
    assert len(await stored_events(state, channel)) == 2


async def test_forged_token_is_401(client, channel):
    url = channel["callback_url"]
    forged = url[:-3] + ("abc" if not url.endswith("abc") else "xyz")
    response = await client.post(forged, json={})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


async def test_expired_token_is_410(client, state, channel):
    token = state.signer.issue(CALLBACK, Claims(channel["id"], int(time.time()) - 1))
    response = await client.post(f"/callbacks/{token}", json={})
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "expired_token"


async def test_very_long_token_is_401(client):
    response = await client.post("/callbacks/" + "a" * 5000, json={})
    assert response.status_code == 401


@pytest.fixture
def settings(make_settings):
    return make_settings(max_callback_bytes=1000, max_event_body_bytes=100)


async def test_oversize_body_is_413_by_content_length(client, state, channel):
    response = await client.post(channel["callback_url"], content=b"x" * 1001)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert await stored_events(state, channel) == []


async def test_oversize_body_is_413_while_streaming(client, state, channel):
    async def chunks():
        for _ in range(20):
            yield b"y" * 100

    response = await client.post(channel["callback_url"], content=chunks())
    assert response.status_code == 413
    assert await stored_events(state, channel) == []


async def test_large_body_is_kept_but_left_out_of_the_event(client, state, channel):
    body = b'{"big": "' + b"z" * 500 + b'"}'
    response = await client.post(channel["callback_url"], content=body)
    assert response.status_code == 200
    [event] = await stored_events(state, channel)
    data = httpx.Response(200, content=event.data).json()
    assert data["body"] is None and data["body_truncated"] is True and data["size"] == len(body)


async def test_bad_content_length_is_400(client, channel):
    request = client.build_request("POST", channel["callback_url"], content=b"{}")
    request.headers["content-length"] = "two"
    response = await client.send(request)
    assert response.status_code == 400


async def test_get_on_a_callback_url_is_405(client, channel):
    response = await client.get(channel["callback_url"])
    assert response.status_code == 405


async def test_a_failure_is_a_json_500_and_the_token_stays_out_of_the_log(
    client, state, channel, caplog, monkeypatch
):
    async def broken(delivery):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(state.store, "add_delivery", broken)
    response = await client.post(channel["callback_url"], json={"x": 1})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    token = channel["callback_url"].rsplit("/", 1)[1]
    assert "disk on fire" in caplog.text
    assert token not in caplog.text


@pytest.mark.parametrize("path", ["/callbacks/", "/callbacks/a/b"])
async def test_callback_paths_without_one_token_are_404(client, path):
    response = await client.post(path, json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_the_event_shows_the_headers_and_query_as_received(client, state, channel):
    await client.post(
        channel["callback_url"] + "?a=1&a=2&b=3",
        json={"n": 1},
        headers=[("x-signature", "s1"), ("x-trace", "t1"), ("x-trace", "t2")],
    )
    [event] = await stored_events(state, channel)
    data = orjson.loads(event.data)
    assert data["headers"]["x-signature"] == "s1"
    assert data["headers"]["x-trace"] == "t1, t2"
    assert data["headers"]["content-type"] == "application/json"
    assert data["query"] == {"a": ["1", "2"], "b": "3"}
