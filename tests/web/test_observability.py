"""/metrics for Prometheus, request ids on every answer and log line, JSON logs."""

from __future__ import annotations

import io
import logging

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub import logs
from tests.helpers import AUTH, data_url, live_hub, make_png, stream
from tests.processes import HubProcess, free_port
from tests.tasks.test_e2e import FAST


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_callbacks_events_streams_tasks_and_provider_calls(make_settings, http):
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as hub:
        channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
        await http.post(channel["callback_url"], json={"n": 1})
        await http.post(channel["callback_url"], json={"n": 1})  # the same bytes: a duplicate
        await http.post(channel["callback_url"][:-3] + "zzz", json={})  # forged: 401
        body = {
            "provider": "atlascloud",
            "input": {"prompt": "p", "images": [data_url(make_png())]},
        }
        task = (await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)).json()
        async with stream(http, task["stream_url"], AUTH) as sse:
            while (await sse.next(30)).event != "task.succeeded":
                pass
        async with stream(http, channel["stream_url"], AUTH) as sse:
            await sse.next()  # subscribed
            response = await http.get(f"{hub.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(response.text)
    assert found[("hub_callbacks_received_total", (("outcome", "stored"),))] == 1
    assert found[("hub_callbacks_received_total", (("outcome", "duplicate"),))] == 1
    assert found[("hub_callbacks_received_total", (("outcome", "401"),))] == 1
    assert found[("hub_events_published_total", (("type", "callback.received"),))] == 1
    assert found[("hub_events_published_total", (("type", "task.succeeded"),))] == 1
    assert found[("hub_subscribers", ())] == 1
    assert found[("hub_tasks", (("provider", "atlascloud"), ("status", "succeeded")))] == 1
    submits = ("hub_provider_request_seconds_count",
               (("call", "submit"), ("outcome", "ok"), ("provider", "atlascloud")))  # fmt: skip
    assert found[submits] == 1
    polls = [
        k
        for k in found
        if k[0] == "hub_provider_request_seconds_count" and ("call", "poll") in k[1]
    ]
    assert polls and all(found[k] >= 1 for k in polls)


async def test_every_answer_has_a_request_id_and_the_access_log_carries_it(make_settings, http):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs._WithRequestId())
    handler.setFormatter(logs.JsonFormatter())
    access = logging.getLogger("hub.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        async with live_hub(make_settings(access_log=True)) as hub:
            channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
            mine = await http.get(
                f"{hub.url}/v1/channels/ch_x", headers={**AUTH, "x-request-id": "req-42"}
            )
            posted = await http.post(
                channel["callback_url"], json={}, headers={"x-request-id": "bad id;" + "x" * 80}
            )
    finally:
        access.removeHandler(handler)
    assert mine.headers["x-request-id"] == "req-42"
    made = posted.headers["x-request-id"]
    assert made != "bad id;" + "x" * 80 and len(made) == 16
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["req-42"]["message"].startswith("GET /v1/channels/{channel_id} 404 ")
    assert by_id[made]["message"].startswith("POST /callbacks/{token} 200 ")
    token = channel["callback_url"].rsplit("/", 1)[1]
    assert token not in out.getvalue()  # the route's template, never the path


@pytest.mark.process
async def test_hub_serve_writes_json_logs(tmp_path, http):
    hub = HubProcess(tmp_path, free_port(), extra={"HUB_LOG_FORMAT": "json", "HUB_ACCESS_LOG": "1"})
    try:
        await hub.ready(http)
        await http.get(f"{hub.url}/healthz", headers={"x-request-id": "probe-1"})
    finally:
        hub.kill()
    records = [orjson.loads(line) for line in hub.output().splitlines() if line.startswith("{")]
    assert any(r["logger"] == "hub.store" and "migrated" in r["message"] for r in records)
    assert any(r.get("request_id") == "probe-1" and r["logger"] == "hub.access" for r in records)
    assert all({"at", "level", "logger", "message"} <= set(r) for r in records)
