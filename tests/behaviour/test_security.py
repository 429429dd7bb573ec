"""Who may see what, and what never reaches a log."""

import logging
from typing import Any

import pytest

from tests.helpers import AUTH, KEY, OTHER_AUTH, OTHER_KEY, data_url, live_hub, make_png, stream
from tests.tasks.test_e2e import FAST

WRONG = {"authorization": "Bearer not-a-key"}


async def owned_objects(client):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    upload = await client.post(
        "/v1/uploads", files={"file": ("a.png", make_png(), "image/png")}, headers=AUTH
    )
    body = {"provider": "segmind", "input": {"prompt": "p", "images": [data_url(make_png())]}}
    task = (await client.post("/v1/tasks", json=body, headers=AUTH)).json()
    return channel["id"], upload.json()["id"], task["id"]


@pytest.fixture
def settings(make_settings):
    env = (("HUB_SEGMIND_API_KEY", "k"), ("HUB_SEGMIND_URL", "http://127.0.0.1:9"))
    return make_settings(extra_env=env)


async def test_every_client_endpoint_401_401_404(client):
    channel, blob, task = await owned_objects(client)
    body = {"url": "https://x.test/", "channel_id": channel}
    hook = (await client.post("/v1/webhooks", json=body, headers=AUTH)).json()["id"]
    reads: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/v1/channels/{channel}", {}),
        ("GET", f"/v1/channels/{channel}/events", {}),
        ("GET", f"/v1/channels/{channel}/tasks/t-1", {}),
        ("POST", "/v1/callback-urls", {"json": {"channel_id": channel}}),
        ("GET", f"/v1/tasks/{task}", {}),
        ("GET", f"/v1/tasks/{task}/events", {}),
        ("GET", f"/v1/blobs/{blob}", {}),
        ("POST", "/v1/webhooks", {"json": {"url": "https://x.test/", "channel_id": channel}}),
        ("POST", "/v1/webhooks", {"json": {"url": "https://x.test/", "task_id": task}}),
        ("GET", f"/v1/webhooks/{hook}", {}),
        ("DELETE", f"/v1/webhooks/{hook}", {}),
    ]
    for method, url, kwargs in reads:
        for headers, expected in (({}, 401), (WRONG, 401), (OTHER_AUTH, 404)):
            response = await client.request(method, url, headers=headers, **kwargs)
            assert response.status_code == expected, (method, url, headers, response.text)
            assert set(response.json()["error"]) == {"code", "message"}
    creates: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/v1/channels", {}),
        ("POST", "/v1/tasks", {"json": {"provider": "segmind", "input": {}}}),
        ("POST", "/v1/uploads", {"files": {"file": ("a.png", make_png(), "image/png")}}),
        ("GET", "/v1/channels", {}),
        ("GET", "/v1/tasks", {}),
        ("GET", "/v1/webhooks", {}),
    ]
    for method, url, kwargs in creates:
        for no_access in ({}, WRONG):
            response = await client.request(method, url, headers=no_access, **kwargs)
            assert response.status_code == 401, (url, response.text)
    # Another tenant cannot use this one's objects as inputs or targets either.
    body = {
        "provider": "segmind",
        "channel_id": channel,
        "input": {"prompt": "p", "images": [blob]},
    }
    response = await client.post("/v1/tasks", json=body, headers=OTHER_AUTH)
    assert response.status_code == 422
    # Lists hold only the key's own objects.
    for path, name in (
        ("/v1/channels", "channels"),
        ("/v1/tasks", "tasks"),
        ("/v1/webhooks", "webhooks"),
    ):
        assert (await client.get(path, headers=OTHER_AUTH)).json() == {name: []}
        mine = (await client.get(path, headers=AUTH)).json()[name]
        assert [item["id"] for item in mine] == [
            {"channels": channel, "tasks": task, "webhooks": hook}[name]
        ]


async def test_a_watch_url_opens_its_own_stream_and_no_other(client):
    channel_a = (await client.post("/v1/channels", headers=AUTH)).json()
    channel_b = (await client.post("/v1/channels", headers=AUTH)).json()
    body = {"provider": "segmind", "input": {"prompt": "p", "images": [data_url(make_png())]}}
    task_a = (await client.post("/v1/tasks", json=body, headers=AUTH)).json()
    task_b = (await client.post("/v1/tasks", json=body, headers=AUTH)).json()
    shown = (await client.get(f"/v1/tasks/{task_a['id']}", headers=AUTH)).json()
    task_token = shown["watch_url"].split("token=", 1)[1]
    channel_token = channel_a["watch_url"].split("token=", 1)[1]
    refused = [
        f"/v1/channels/{channel_b['id']}/events?token={channel_token}",
        f"/v1/tasks/{task_b['id']}/events?token={task_token}",
        f"/v1/tasks/{task_a['id']}/events?token={channel_token}",
        f"/v1/channels/{channel_a['id']}/events?token={task_token}",
        f"/v1/tasks/{task_a['id']}/events?token={task_token[:-2]}xx",
    ]
    for url in refused:
        response = await client.get(url)
        assert response.status_code == 401, (url, response.text)


async def test_no_key_token_or_secret_reaches_the_log(make_settings, http, caplog):
    provider_key = "provider-key-4f9d2c"
    env = (*FAST, ("HUB_EACHLABS_API_KEY", provider_key))
    caplog.set_level(logging.DEBUG)
    async with live_hub(make_settings(sandbox=True, extra_env=env)) as hub:
        channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
        await http.post(channel["callback_url"], json={"task_id": "t"})
        await http.post(channel["callback_url"][:-3] + "zzz", json={})  # forged: 401
        body = {"provider": "eachlabs", "input": {"prompt": "p", "images": [data_url(make_png())]}}
        task = (await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)).json()
        async with stream(http, task["stream_url"], AUTH) as sse:
            while (await sse.next(30)).event != "task.succeeded":
                pass
        await http.post(f"{hub.url}/sandbox/eachlabs/_sandbox/faults", json={"kind": "fail"})
        failed = (await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)).json()
        async with stream(http, failed["stream_url"], AUTH) as sse:
            while (await sse.next(30)).event != "task.failed":
                pass
    # What `hub serve` logs: the hub's and uvicorn's records, and httpx's from WARNING up
    # (it logs every request URL at INFO, so hub serve raises it; this process shares
    # httpx with the test's own client).
    kept = [
        r.getMessage() + (r.exc_text or "")
        for r in caplog.records
        if r.name.startswith(("hub", "uvicorn")) or r.levelno >= logging.WARNING
    ]
    logged = "\n".join(kept)
    assert "store migrated to version" in logged  # the hub's own lines were captured
    secrets = [KEY, OTHER_KEY, "test-secret", provider_key]
    secrets.append(channel["callback_url"].rsplit("/", 1)[1])
    secrets.append(channel["watch_url"].split("token=", 1)[1])
    for secret in secrets:
        assert secret not in logged


async def test_a_tasks_watch_url_streams_it_without_a_key(settings, http):
    async with live_hub(settings) as hub:
        body = {"provider": "segmind", "input": {"prompt": "p", "images": [data_url(make_png())]}}
        created = (await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)).json()
        [listed] = (await http.get(f"{hub.url}/v1/tasks", headers=AUTH)).json()["tasks"]
        assert listed["id"] == created["id"]
        async with stream(http, listed["watch_url"], {}) as sse:
            (queued,) = await sse.events(1)
        assert queued.event == "task.queued" and queued.json["task_id"] == created["id"]
