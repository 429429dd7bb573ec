"""Quotas per key: one key cannot hold more than its share, and never takes another's."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager

from hub.web.app import create_app
from tests.helpers import AUTH, OTHER_AUTH, live_hub, make_png, stream, until


@pytest.fixture
def settings(make_settings):
    return make_settings(
        quota_channels=2, quota_webhooks=3, quota_blob_bytes=20_000, quota_streams=1,
        quota_live_tasks=1, extra_env=(("HUB_SEGMIND_API_KEY", "k"),
                                       ("HUB_SEGMIND_URL", "http://127.0.0.1:9")),
    )  # fmt: skip


def refused(answer: httpx.Response, quota: str) -> None:
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert error["code"] == "quota_exceeded" and error["message"].startswith(quota + ":")
    assert int(answer.headers["retry-after"]) >= 1


async def test_channels_beyond_the_quota_are_refused_for_that_key_only(client):
    for _ in range(2):
        assert (await client.post("/v1/channels", headers=AUTH)).status_code == 201
    refused(await client.post("/v1/channels", headers=AUTH), "HUB_QUOTA_CHANNELS")
    assert (await client.post("/v1/channels", headers=OTHER_AUTH)).status_code == 201


async def test_webhooks_count_those_named_when_a_channel_is_made(client):
    hooks = ["https://hooks.example/a", "https://hooks.example/b", "https://hooks.example/c"]
    made = await client.post("/v1/channels", headers=AUTH, json={"webhook_urls": hooks[:2]})
    assert made.status_code == 201
    channel = made.json()["id"]
    one = {"url": hooks[2], "channel_id": channel}
    assert (await client.post("/v1/webhooks", headers=AUTH, json=one)).status_code == 201
    refused(await client.post("/v1/webhooks", headers=AUTH, json=one), "HUB_QUOTA_WEBHOOKS")


async def test_blob_bytes_are_counted_per_key(client):
    image = make_png((64, 64))
    uploads = 0
    while True:
        answer = await client.post("/v1/uploads", headers=AUTH, files={"file": ("a.png", image)})
        if answer.status_code != 201:
            break
        uploads += 1
    refused(answer, "HUB_QUOTA_BLOB_BYTES")
    assert uploads == 20_000 // len(image)
    other = await client.post("/v1/uploads", headers=OTHER_AUTH, files={"file": ("a.png", image)})
    assert other.status_code == 201


async def test_live_tasks_beyond_the_quota_are_refused(client):
    upload = await client.post("/v1/uploads", headers=AUTH, files={"file": ("a.png", make_png())})
    images = [upload.json()["id"]]
    body = {"provider": "segmind", "input": {"prompt": "p", "images": images}}
    assert (await client.post("/v1/tasks", headers=AUTH, json=body)).status_code == 202
    refused(await client.post("/v1/tasks", headers=AUTH, json=body), "HUB_QUOTA_LIVE_TASKS")


async def test_open_streams_beyond_the_quota_are_refused(settings, http):
    async with live_hub(settings) as hub:
        channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
        async with stream(http, channel["stream_url"], AUTH):
            await until(lambda: hub.state.streams.count(hub.state.keys.require(
                AUTH["authorization"])) == 1, timeout=10)  # fmt: skip
            refused(await http.get(channel["stream_url"], headers=AUTH), "HUB_QUOTA_STREAMS")
        # Closed: the quota frees up.
        owner = hub.state.keys.require(AUTH["authorization"])
        await until(lambda: hub.state.streams.count(owner) == 0, timeout=10)
        async with stream(http, channel["stream_url"], AUTH) as again:
            assert again is not None


async def metrics_from(settings, client_host: str, headers: dict[str, str] | None = None):
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(client_host, 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
            return await c.get("/metrics", headers=headers or {})


async def test_metrics_answer_only_on_loopback_without_a_token(make_settings):
    settings = make_settings()
    assert (await metrics_from(settings, "127.0.0.1")).status_code == 200
    assert (await metrics_from(settings, "::1")).status_code == 200
    answer = await metrics_from(settings, "203.0.113.7")
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "forbidden"


async def test_metrics_need_the_token_when_one_is_set(make_settings):
    settings = make_settings(metrics_token="scrape-me")
    assert (await metrics_from(settings, "127.0.0.1")).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert (await metrics_from(settings, "203.0.113.7", wrong)).status_code == 401
    right = {"authorization": "Bearer scrape-me"}
    answer = await metrics_from(settings, "203.0.113.7", right)
    assert answer.status_code == 200 and b"hub_callbacks_received" in answer.content
