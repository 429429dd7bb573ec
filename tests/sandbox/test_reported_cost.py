"""The provider's own figure is what a task is billed: a task run through the sandbox
shows, in ``cost.billed_usd``, the cost the emulator reported for its job (the
``cost_usd`` its ledger holds), not the hub's estimate. On either store."""

import pytest

from tests.helpers import AUTH, data_url, live_hub, make_png, until

FAST = (
    ("HUB_SANDBOX_LATENCY", "0"),
    ("HUB_EACHLABS_FIRST_POLL_AFTER", "0.05"),
    ("HUB_EACHLABS_POLL_INTERVAL", "0.05"),
    # The older webhook body carries metrics.cost (the current one has none).
    ("HUB_SANDBOX_EACHLABS_WEBHOOK_SHAPE", "legacy"),
)


async def ended(http, base, task_id):
    async def done():
        record = (await http.get(f"{base}/v1/tasks/{task_id}", headers=AUTH)).json()
        return record["status"] not in ("queued", "submitted")

    await until(done, timeout=30)
    return (await http.get(f"{base}/v1/tasks/{task_id}", headers=AUTH)).json()


async def run(make_settings, http, provider, options, fault=None):
    """One task through the sandbox: the task as it ended, and its job in the ledger."""
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as hub:
        mount = f"{hub.url}/sandbox/{provider}/_sandbox"
        await http.delete(f"{mount}/ledger")
        if fault is not None:
            queued = await http.post(f"{mount}/faults", json={"kind": fault, "count": 1})
            assert queued.status_code == 201, queued.text
        task_input = {"prompt": "make it blue", "images": [data_url(make_png())], **options}
        created = await http.post(
            f"{hub.url}/v1/tasks", json={"provider": provider, "input": task_input}, headers=AUTH
        )
        assert created.status_code == 202, created.text
        task = await ended(http, hub.url, created.json()["id"])
        (job,) = (await http.get(f"{mount}/ledger")).json()["jobs"]
    assert task["status"] == "succeeded", task
    return task, job


@pytest.mark.parametrize(
    "provider, options, fault, estimated, reported",
    [
        # Segmind: x-cost on the synchronous answer; its table is a flat $0.14.
        ("segmind", {"quality": "low"}, None, 0.14, 0.03),
        # Eachlabs, its webhook lost: metrics.cost in the prediction polled. The
        # estimate prices low 1536x1024 at $0.016.
        ("eachlabs", {"quality": "low", "size": "1536x1024"}, "lost_callback", 0.016, 0.011),
    ],
)
async def test_a_task_is_billed_what_the_provider_reported(
    make_settings, http, provider, options, fault, estimated, reported
):
    task, job = await run(make_settings, http, provider, options, fault)
    assert (job["billed"], job["cost_usd"]) == (True, reported)
    assert task["cost"] == {"estimated_usd": estimated, "billed_usd": reported, "currency": "USD"}


async def test_a_webhook_with_a_cost_bills_it(make_settings, http):
    options = {"quality": "low", "size": "1536x1024"}
    task, job = await run(make_settings, http, "eachlabs", options)
    assert job["cost_usd"] == 0.011
    assert task["cost"]["billed_usd"] == 0.011
