"""A channel's history: newest first with a cursor, one delivery in full, its exact bytes
(whatever the size), and an export; each key sees only its own."""

import base64

import orjson
import pytest

from hub.store.base import EventQuery
from tests.helpers import AUTH, OTHER_AUTH


@pytest.fixture
async def channel(client):
    response = await client.post("/v1/channels", headers=AUTH)
    assert response.status_code == 201
    return response.json()


async def post(client, channel, n, **kwargs):
    response = await client.post(channel["callback_url"], **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


async def history(client, channel, **params):
    response = await client.get(
        f"/v1/channels/{channel['id']}/deliveries", params=params, headers=AUTH
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_event_names_its_delivery_and_history_shows_it(client, state, channel):
    body = b'{"task_id":  "p-1", "n": 1}'
    ack = await post(
        client, channel, 0, content=body,
        headers={"content-type": "application/json", "x-sig": "a"}, params={"event": "a"},
    )  # fmt: skip
    [event] = await state.store.events_after(EventQuery(channel_id=channel["id"]), 0, 10)
    delivery_id = orjson.loads(event.data)["delivery_id"]
    assert delivery_id.startswith("dlv_")
    page = await history(client, channel)
    assert page["next_before"] is None
    [listed] = page["deliveries"]
    assert listed["id"] == delivery_id
    assert listed["event_id"] == ack["event_id"]
    assert listed["channel_id"] == channel["id"]
    assert listed["task_id"] == "p-1"
    assert listed["size"] == len(body)
    assert listed["content_type"] == "application/json"
    assert listed["query"] == "event=a"
    assert ["x-sig", "a"] in listed["headers"]
    assert listed["verified"] is False
    assert listed["received_at"].endswith("Z")
    one = await client.get(f"/v1/deliveries/{delivery_id}", headers=AUTH)
    assert one.status_code == 200
    assert one.json() == listed
    raw = await client.get(f"/v1/deliveries/{delivery_id}/body", headers=AUTH)
    assert raw.status_code == 200
    assert raw.content == body
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers["x-content-type-options"] == "nosniff"


async def test_newest_first_with_a_cursor_and_a_task_filter(client, channel):
    for n in range(7):
        await post(client, channel, n, json={"task_id": f"t{n % 2}", "n": n})
    seen = []
    before = None
    while True:
        params = {"limit": 3} | ({"before": before} if before else {})
        page = await history(client, channel, **params)
        seen += [orjson.loads((await client.get(
            f"/v1/deliveries/{d['id']}/body", headers=AUTH)).content)["n"]
            for d in page["deliveries"]]  # fmt: skip
        before = page["next_before"]
        if before is None:
            break
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    odd = await history(client, channel, task_id="t1")
    assert [d["task_id"] for d in odd["deliveries"]] == ["t1"] * 3


async def test_a_body_over_the_event_limit_is_read_back_whole(client, channel, state):
    body = bytes(range(256)) * (4 * state.settings.max_event_body_bytes // 256 + 1)
    await post(
        client, channel, 0, content=body, headers={"content-type": "application/octet-stream"}
    )
    [listed] = (await history(client, channel))["deliveries"]
    assert listed["size"] == len(body)
    raw = await client.get(f"/v1/deliveries/{listed['id']}/body", headers=AUTH)
    assert raw.content == body
    assert raw.headers["content-type"] == "application/octet-stream"


async def test_export_has_every_delivery_with_its_bytes(client, channel):
    bodies = [b"a=1", b"\xff\x00binary", b'{"x": 1}']
    for n, body in enumerate(bodies):
        await post(client, channel, n, content=body, headers={"content-type": "text/plain"})
    response = await client.get(f"/v1/channels/{channel['id']}/deliveries.ndjson", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert [base64.b64decode(line["body_base64"]) for line in lines] == bodies[::-1]
    assert all(line["channel_id"] == channel["id"] for line in lines)


async def test_another_key_sees_none_of_it(client, channel):
    await post(client, channel, 0, json={"a": 1})
    [listed] = (await history(client, channel))["deliveries"]
    for url in [
        f"/v1/channels/{channel['id']}/deliveries",
        f"/v1/channels/{channel['id']}/deliveries.ndjson",
        f"/v1/deliveries/{listed['id']}",
        f"/v1/deliveries/{listed['id']}/body",
    ]:
        response = await client.get(url, headers=OTHER_AUTH)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    for bad in ["dlv_nope", "x" * 300, "dlv_" + "0" * 24]:
        assert (await client.get(f"/v1/deliveries/{bad}", headers=AUTH)).status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"before": "dlv_x"}, "before")],
)
async def test_bad_paging_names_the_field(client, channel, params, field):
    response = await client.get(
        f"/v1/channels/{channel['id']}/deliveries", params=params, headers=AUTH
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field


async def test_a_cursor_from_another_channel_is_refused(client, channel):
    other = (await client.post("/v1/channels", headers=AUTH)).json()
    await post(client, other, 0, json={"a": 1})
    [listed] = (await history(client, other))["deliveries"]
    response = await client.get(
        f"/v1/channels/{channel['id']}/deliveries", params={"before": listed["id"]}, headers=AUTH
    )
    assert response.status_code == 422
