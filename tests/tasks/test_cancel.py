"""POST /v1/tasks/{id}/cancel, on either store: a queued task ends at once and nothing is
sent; a submitted one ends canceled and a result that comes later is kept as a delivery,
never applied; an ended task answers 409."""

import time

import httpx
import pytest

from hub.enums import TaskStatus
from hub.providers.base import ErrorCode, ProviderError, Resend
from tests.helpers import (
    AUTH,
    OTHER_AUTH,
    data_url,
    live_hub,
    make_png,
    query_store,
    stream_to_end,
    until,
)

DOWN = (("HUB_SEGMIND_API_KEY", "k"), ("HUB_SEGMIND_URL", "http://127.0.0.1:9"))
QUEUED = frozenset({TaskStatus.QUEUED})


def body(provider="segmind"):
    return {"provider": provider, "input": {"prompt": "p", "images": [data_url(make_png())]}}


@pytest.fixture
def settings(make_settings):
    # No worker: a task stays queued until it is canceled.
    return make_settings(extra_env=DOWN, worker_concurrency=0, budget_usd=0.14)


async def test_a_queued_task_is_canceled_at_once_and_its_stream_ends(client):
    created = (await client.post("/v1/tasks", json=body(), headers=AUTH)).json()
    # Its estimate is reserved: the budget (one task's worth) is full.
    assert (await client.post("/v1/tasks", json=body(), headers=AUTH)).status_code == 402
    assert (
        await client.post(f"/v1/tasks/{created['id']}/cancel", headers=OTHER_AUTH)
    ).status_code == 404

    response = await client.post(f"/v1/tasks/{created['id']}/cancel", headers=AUTH)
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["status"] == "canceled" and task["error"]["code"] == "canceled"
    assert task["attempts"] == 0 and task["cost"]["billed_usd"] == 0.0
    # The stream replays queued then canceled, and closes after it.
    events = await client.get(created["stream_url"].removeprefix("http://hub.test"), headers=AUTH)
    types = [line[7:] for line in events.text.splitlines() if line.startswith("event: ")]
    assert types == ["task.queued", "task.canceled"]
    again = await client.post(f"/v1/tasks/{created['id']}/cancel", headers=AUTH)
    assert again.status_code == 409 and again.json()["error"]["code"] == "task_ended"
    # Nothing was billed: the reservation is released.
    assert (await client.post("/v1/tasks", json=body(), headers=AUTH)).status_code == 202


async def test_a_task_canceled_mid_send_keeps_its_estimate(client, state):
    created = (await client.post("/v1/tasks", json=body(), headers=AUTH)).json()
    # A send under way (its marker set): the job may have been accepted.
    await state.store.update_task(created["id"], QUEUED, {"sending_at": time.time()})
    task = (await client.post(f"/v1/tasks/{created['id']}/cancel", headers=AUTH)).json()
    assert task["status"] == "canceled" and task["cost"]["billed_usd"] == 0.14


async def test_a_canceled_task_is_never_applied_by_a_late_callback(make_settings):
    # The sandbox answers AceData's callback after a second; the task is canceled before.
    env = (("HUB_SANDBOX_LATENCY", "1.5"), ("HUB_ACEDATA_FIRST_POLL_AFTER", "60"))
    async with (
        live_hub(make_settings(sandbox=True, extra_env=env)) as hub,
        httpx.AsyncClient(timeout=30) as http,
    ):
        created = (
            await http.post(f"{hub.url}/v1/tasks", json=body("acedata"), headers=AUTH)
        ).json()
        url = f"{hub.url}/v1/tasks/{created['id']}"

        async def submitted():
            return (await http.get(url, headers=AUTH)).json()["status"] == "submitted"

        await until(submitted, timeout=10)
        canceled = (await http.post(f"{url}/cancel", headers=AUTH)).json()
        assert canceled["status"] == "canceled"
        # Accepted, so billed at its estimate.
        assert canceled["cost"]["billed_usd"] == canceled["cost"]["estimated_usd"] > 0

        # The provider's callback comes, and is kept as it arrived...
        sql = f"SELECT count(*) FROM deliveries WHERE task_id = '{created['id']}'"

        async def delivered():
            return (await query_store(hub.state.store, sql))[0] == 1

        await until(delivered, timeout=15)
        # ...but the task stays as canceled left it.
        task = (await http.get(url, headers=AUTH)).json()
        assert task["status"] == "canceled" and task["outputs"] == []
        assert task["cost"] == canceled["cost"]
        types = await stream_to_end(http, created["stream_url"], AUTH)
        assert types == ["task.queued", "task.submitted", "task.canceled"]


async def test_a_submitted_task_asks_its_provider_to_stop(client, state, monkeypatch):
    created = (await client.post("/v1/tasks", json=body(), headers=AUTH)).json()
    accepted = {"status": TaskStatus.SUBMITTED, "provider_task_id": "job-7"}
    await state.store.update_task(created["id"], QUEUED, accepted)
    asked = []

    async def cancel(provider_task_id):
        asked.append(provider_task_id)
        return True

    monkeypatch.setattr(state.engine.providers["segmind"], "cancel", cancel)
    task = (await client.post(f"/v1/tasks/{created['id']}/cancel", headers=AUTH)).json()
    assert asked == ["job-7"]
    assert task["status"] == "canceled" and "asked to stop" in task["error"]["message"]
    # Accepted: billed at its estimate.
    assert task["cost"] == {"estimated_usd": 0.14, "billed_usd": 0.14, "currency": "USD"}


async def test_a_provider_that_fails_to_cancel_leaves_the_task_canceled(client, state, monkeypatch):
    created = (await client.post("/v1/tasks", json=body(), headers=AUTH)).json()
    accepted = {"status": TaskStatus.SUBMITTED, "provider_task_id": "job-8"}
    await state.store.update_task(created["id"], QUEUED, accepted)

    async def cancel(provider_task_id):
        raise ProviderError(
            "segmind: down", resend=Resend.SAFE, code=ErrorCode.PROVIDER_UNAVAILABLE
        )

    monkeypatch.setattr(state.engine.providers["segmind"], "cancel", cancel)
    response = await client.post(f"/v1/tasks/{created['id']}/cancel", headers=AUTH)
    assert response.status_code == 200 and response.json()["status"] == "canceled"
