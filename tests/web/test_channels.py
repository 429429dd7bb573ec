import asyncio
import time

import pytest

from hub.access.tokens import WATCH, Claims
from tests.helpers import AUTH, OTHER_AUTH, until


async def new_channel(client, headers=AUTH, **body):
    response = await client.post("/v1/channels", json=body or None, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_channel_gives_the_urls(client):
    before = time.time()
    channel = await new_channel(client, label="orders")
    assert channel["id"].startswith("ch_")
    assert channel["label"] == "orders"
    assert channel["callback_url"].startswith("http://hub.test/callbacks/")
    assert channel["stream_url"] == f"http://hub.test/v1/channels/{channel['id']}/events"
    assert channel["watch_url"].startswith(channel["stream_url"] + "?token=")
    expires = time.mktime(time.strptime(channel["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert expires - time.timezone > before + 6 * 86400


async def test_create_channel_without_a_body(client):
    response = await client.post("/v1/channels", headers=AUTH)
    assert response.status_code == 201
    assert response.json()["label"] is None


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"label": 5}, 422, "label"),
        ({"label": "x" * 201}, 422, "label"),
        ({"ttl_seconds": 0}, 422, "ttl_seconds"),
        ({"ttl_seconds": "soon"}, 422, "ttl_seconds"),
        ({"ttl_seconds": True}, 422, "ttl_seconds"),
        ({"ttl_seconds": 10**12}, 422, "ttl_seconds"),
        ({"color": "red"}, 422, "color"),
        ([1, 2], 422, "body"),
    ],
)
async def test_bad_channel_input_names_the_field(client, body, status, field):
    response = await client.post("/v1/channels", json=body, headers=AUTH)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(field + ":")


async def test_unparseable_json_is_400(client):
    response = await client.post("/v1/channels", content=b"{nope", headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": "Basic dGVzdA=="},
        {"authorization": "Bearer " + "x" * 600},
    ],
)
async def test_client_endpoints_need_a_key(client, headers):
    response = await client.post("/v1/channels", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_another_keys_channel_is_404_everywhere(client):
    channel = await new_channel(client)
    cid = channel["id"]
    for method, url, kwargs in [
        ("GET", f"/v1/channels/{cid}", {}),
        ("GET", f"/v1/channels/{cid}/events", {}),
        ("GET", f"/v1/channels/{cid}/tasks/t1", {}),
        ("POST", "/v1/callback-urls", {"json": {"channel_id": cid}}),
    ]:
        response = await client.request(method, url, headers=OTHER_AUTH, **kwargs)
        assert response.status_code == 404, (url, response.text)
        assert response.json()["error"]["code"] == "not_found"


async def test_show_channel_with_a_fresh_watch_url(client):
    channel = await new_channel(client, label="x")
    response = await client.get(f"/v1/channels/{channel['id']}", headers=AUTH)
    assert response.status_code == 200
    shown = response.json()
    assert shown["id"] == channel["id"] and shown["label"] == "x"
    assert "callback_url" not in shown
    assert shown["watch_url"].startswith(channel["stream_url"] + "?token=")


@pytest.mark.parametrize("cid", ["nope", "ch_../../etc", "ch_" + "0" * 24, "ch_%00"])
async def test_unknown_or_malformed_channel_ids_are_404(client, cid):
    response = await client.get(f"/v1/channels/{cid}", headers=AUTH)
    assert response.status_code == 404


async def test_callback_url_for_an_existing_channel(client):
    channel = await new_channel(client)
    response = await client.post(
        "/v1/callback-urls", json={"channel_id": channel["id"], "ttl_seconds": 60}, headers=AUTH
    )
    assert response.status_code == 201
    issued = response.json()
    assert issued["channel_id"] == channel["id"]
    assert issued["callback_url"] != channel["callback_url"]
    posted = await client.post(issued["callback_url"], json={"hello": "world"})
    assert posted.status_code == 200


async def test_callback_url_never_outlives_its_channel(client):
    channel = await new_channel(client, ttl_seconds=100)
    response = await client.post(
        "/v1/callback-urls", json={"channel_id": channel["id"], "ttl_seconds": 10**6}, headers=AUTH
    )
    assert response.json()["expires_at"] == channel["expires_at"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "channel_id"),
        ({"channel_id": 3}, "channel_id"),
        ({"channel_id": "ch_x", "ttl_seconds": -1}, None),
    ],
)
async def test_callback_url_bad_input(client, body, field):
    response = await client.post("/v1/callback-urls", json=body, headers=AUTH)
    if field is None:
        assert response.status_code == 404  # the channel is checked before the ttl
    else:
        assert response.status_code == 422
        assert response.json()["error"]["message"].startswith(field)


async def test_callback_url_for_an_expired_channel_is_410(client, state):
    channel = await new_channel(client, ttl_seconds=1)
    stored = await state.store.get_channel(channel["id"])
    assert stored is not None
    await asyncio.sleep(max(0.0, stored.expires_at - time.time()) + 0.01)
    response = await client.post(
        "/v1/callback-urls", json={"channel_id": channel["id"]}, headers=AUTH
    )
    assert response.status_code == 410


async def test_task_lookup_finds_a_callback_that_came_before(client):
    channel = await new_channel(client)
    await client.post(channel["callback_url"], json={"task_id": "t-1", "status": "first"})
    await client.post(channel["callback_url"], json={"task_id": "t-1", "status": "second"})
    await client.post(channel["callback_url"], json={"task_id": "t-2", "status": "other"})
    response = await client.get(f"/v1/channels/{channel['id']}/tasks/t-1", headers=AUTH)
    assert response.status_code == 200
    record = response.json()
    assert record["event_id"] == 2
    assert record["task_id"] == "t-1"
    assert record["body"] == {"task_id": "t-1", "status": "second"}


async def test_task_lookup_waits_for_a_callback_during_the_wait(client, state):
    channel = await new_channel(client)
    url = f"/v1/channels/{channel['id']}/tasks/later?wait=10"
    waiting = asyncio.create_task(client.get(url, headers=AUTH))
    # Once the request is waiting on the broker, deliver the callback.
    await until(lambda: state.broker.subscriber_count > 0)
    await client.post(channel["callback_url"], json={"data": {"task_id": "later"}, "ok": True})
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 200
    assert response.json()["body"]["ok"] is True


async def test_task_lookup_404_after_the_wait(client):
    channel = await new_channel(client)
    response = await client.get(f"/v1/channels/{channel['id']}/tasks/never?wait=1", headers=AUTH)
    assert response.status_code == 404


@pytest.mark.parametrize("wait", ["-1", "abc", "301", "1.5"])
async def test_task_lookup_bad_wait_is_422(client, wait):
    channel = await new_channel(client)
    response = await client.get(f"/v1/channels/{channel['id']}/tasks/x?wait={wait}", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("wait:")


async def test_watch_token_opens_only_its_own_channel(client, state):
    a = await new_channel(client)
    b = await new_channel(client)
    token_a = a["watch_url"].split("token=", 1)[1]
    response = await client.get(f"/v1/channels/{b['id']}/events?token={token_a}")
    assert response.status_code == 401
    expired = state.signer.issue(WATCH, Claims(a["id"], int(time.time()) - 1))
    response = await client.get(f"/v1/channels/{a['id']}/events?token={expired}")
    assert response.status_code == 410


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("last_event_id=-4", "last_event_id"),
        ("last_event_id=1e9", "last_event_id"),
        ("types=,,", "types"),
        ("task_id=" + "x" * 201, "task_id"),
    ],
)
async def test_stream_bad_parameters_are_422(client, query, field):
    channel = await new_channel(client)
    response = await client.get(f"/v1/channels/{channel['id']}/events?{query}", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith(field)


async def test_garbage_last_event_id_header_is_422(client):
    channel = await new_channel(client)
    headers = {**AUTH, "last-event-id": "abc"}
    response = await client.get(f"/v1/channels/{channel['id']}/events", headers=headers)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("Last-Event-ID")


async def test_unknown_route_and_method_use_the_error_shape(client):
    response = await client.get("/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    response = await client.delete("/v1/channels")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_healthz(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
