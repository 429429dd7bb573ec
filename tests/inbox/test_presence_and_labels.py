"""Presence: a channel reports its open streams (across replicas on PostgreSQL). Honest
labels: a task id is read only from keys that name a task, or from the channel's path."""

import orjson
import pytest

from hub.store.base import EventQuery
from tests.helpers import AUTH, live_hub, stream, until


async def subscribers(http, base, channel):
    answer = await http.get(f"{base}/v1/channels/{channel['id']}", headers=AUTH)
    assert answer.status_code == 200
    return answer.json()["subscribers"]


async def test_subscribers_counts_the_open_streams(live, http):
    channel = (await http.post(f"{live.url}/v1/channels", headers=AUTH)).json()
    assert await subscribers(http, live.url, channel) == 0
    async with (
        stream(http, channel["watch_url"]) as one,
        stream(http, channel["stream_url"], AUTH) as two,
    ):
        await one.next()
        await two.next()
        assert await subscribers(http, live.url, channel) == 2

    async def none_left() -> bool:
        return await subscribers(http, live.url, channel) == 0

    await until(none_left, timeout=10)
    listed = (await http.get(f"{live.url}/v1/channels", headers=AUTH)).json()["channels"]
    assert "subscribers" not in listed[0]  # only where asked for one channel


@pytest.fixture
async def replicas(make_settings, pg_url):
    settings = make_settings(database_url=pg_url)
    async with live_hub(settings) as a, live_hub(settings) as b:
        yield a, b


async def test_subscribers_across_replicas(replicas, http):
    a, b = replicas
    channel = (await http.post(f"{a.url}/v1/channels", headers=AUTH)).json()
    url = f"{b.url}/v1/channels/{channel['id']}/events"
    async with stream(http, url, AUTH) as sse:
        await sse.next()

        async def seen_on_a() -> bool:
            return await subscribers(http, a.url, channel) == 1

        await until(seen_on_a, timeout=20)
        assert await subscribers(http, b.url, channel) == 1

    async def gone_on_a() -> bool:
        return await subscribers(http, a.url, channel) == 0

    await until(gone_on_a, timeout=20)


async def task_id_of(client, state, channel, body):
    response = await client.post(channel["callback_url"], json=body)
    assert response.status_code == 200
    events = await state.store.events_after(EventQuery(channel_id=channel["id"]), 0, 100)
    return orjson.loads(events[-1].data).get("task_id")


async def test_a_bare_id_is_not_a_task(client, state):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    body = {"event": "order.paid", "data": {"id": "ord_1"}}
    assert await task_id_of(client, state, channel, body) is None
    assert await task_id_of(client, state, channel, {"id": "evt_1"}) is None
    page = await client.get(f"/v1/channels/{channel['id']}/deliveries", headers=AUTH)
    assert [d["task_id"] for d in page.json()["deliveries"]] == [None, None]


@pytest.mark.parametrize(
    ("body", "task_id"),
    [
        ({"task_id": "t-1"}, "t-1"),
        ({"data": {"taskId": "t-2", "id": "x"}}, "t-2"),
        ({"predictionID": "p-3", "status": "success"}, "p-3"),
        ({"request_id": "r-4"}, "r-4"),
        ({"id": "x", "data": {"task_id": 5}}, "5"),
    ],
)
async def test_keys_that_name_a_task_are_read(client, state, body, task_id):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    assert await task_id_of(client, state, channel, body) == task_id


async def test_a_channel_can_name_the_path(client, state):
    made = await client.post("/v1/channels", json={"task_id_path": "data.id"}, headers=AUTH)
    channel = made.json()
    assert channel["task_id_path"] == "data.id"
    body = {"event": "order.paid", "data": {"id": "ord_1"}}
    assert await task_id_of(client, state, channel, body) == "ord_1"
    assert await task_id_of(client, state, channel, {"task_id": "t"}) is None
    found = await client.get(f"/v1/channels/{channel['id']}/tasks/ord_1", headers=AUTH)
    assert found.status_code == 200


@pytest.mark.parametrize("path", ["", "data..id", "a b", "." * 3, "a." * 9 + "a"])
async def test_a_bad_path_is_422(client, path):
    response = await client.post("/v1/channels", json={"task_id_path": path}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "task_id_path"
