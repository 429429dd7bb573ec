"""Every fault the sandbox can inject, one test each, asserting how the task ends."""

import asyncio
import contextlib

import pytest

from hub.store.base import EventQuery
from tests.helpers import AUTH, data_url, live_hub, make_png, stream, until
from tests.tasks.test_e2e import FAST


async def inject(http, hub, provider, kind, count=1):
    url = f"{hub.url}/sandbox/{provider}/_sandbox/faults"
    response = await http.post(url, json={"kind": kind, "count": count})
    assert response.status_code == 201, response.text


async def submit(http, hub, provider):
    body = {"provider": provider, "input": {"prompt": "p", "images": [data_url(make_png())]}}
    response = await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()


async def finish(http, hub, task):
    """The task's events until the stream closes after the terminal one."""
    frames = []
    async with stream(http, task["stream_url"], AUTH) as sse:
        try:
            while True:
                frame = await sse.next(30)
                if frame.data:
                    frames.append(frame)
        except EOFError:
            pass
    record = (await http.get(f"{hub.url}/v1/tasks/{task['id']}", headers=AUTH)).json()
    return [f.event for f in frames], frames[-1].json, record


def hub_with(make_settings, *extra, **changes):
    return live_hub(make_settings(sandbox=True, extra_env=FAST + extra, **changes))


SUCCEEDED = ["task.queued", "task.submitted", "task.succeeded"]
RETRYING = "task.retrying"


async def test_429_burst_is_retried_with_backoff_then_succeeds(make_settings, http):
    async with hub_with(make_settings) as hub:
        await inject(http, hub, "acedata", "429", 2)
        task = await submit(http, hub, "acedata")
        frames = []
        async with stream(http, task["stream_url"], AUTH) as sse:
            with contextlib.suppress(EOFError):
                while True:
                    frame = await sse.next(30)
                    if frame.data:
                        frames.append(frame)
        record = (await http.get(f"{hub.url}/v1/tasks/{task['id']}", headers=AUTH)).json()
    assert [f.event for f in frames] == ["task.queued", RETRYING, RETRYING, *SUCCEEDED[1:]]
    retries = [f.json for f in frames if f.event == RETRYING]
    assert [r["attempt"] for r in retries] == [1, 2]
    for retry in retries:
        assert retry["error"]["code"] == "rate_limited" and "429" in retry["error"]["message"]
        assert retry["retry_at"] > retry["at"] and retry["task_id"] == task["id"]
    assert record["attempts"] == 3 and record["error"] is None
    assert record["last_error"]["code"] == "rate_limited" and record["next_attempt_at"] is None


async def test_a_429_shows_as_task_retrying_on_the_task_and_its_channel(make_settings, http):
    """The retry is visible while it waits: an event on the task's and the channel's
    streams, and last_error / next_attempt_at on the task."""
    async with hub_with(make_settings) as hub:
        channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
        await inject(http, hub, "eachlabs", "429")
        body = {
            "provider": "eachlabs",
            "input": {"prompt": "p", "images": [data_url(make_png())]},
            "channel_id": channel["id"],
        }
        async with stream(http, channel["stream_url"], AUTH) as on_channel:
            response = await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)
            assert response.status_code == 202, response.text
            task = response.json()
            while (frame := await on_channel.next(30)).event != RETRYING:
                pass
        record = (await http.get(f"{hub.url}/v1/tasks/{task['id']}", headers=AUTH)).json()
    assert frame.json["task_id"] == task["id"] and frame.json["attempt"] == 1
    assert frame.json["error"]["code"] == "rate_limited"
    # The emulator's 429 asks for 60 s: the task says so, and waits.
    assert record["status"] == "queued" and record["error"] is None
    assert record["last_error"] == frame.json["error"]
    assert record["next_attempt_at"] == frame.json["retry_at"]


async def test_5xx_is_retried_then_succeeds(make_settings, http):
    async with hub_with(make_settings) as hub:
        await inject(http, hub, "segmind", "500")
        events, _, record = await finish(http, hub, await submit(http, hub, "segmind"))
    assert events == ["task.queued", RETRYING, *SUCCEEDED[1:]] and record["attempts"] == 2


async def test_retries_are_bounded(make_settings, http):
    async with hub_with(make_settings, task_max_attempts=2) as hub:
        await inject(http, hub, "segmind", "500", 5)
        events, last, record = await finish(http, hub, await submit(http, hub, "segmind"))
    assert events == ["task.queued", RETRYING, "task.failed"]
    assert record["attempts"] == 2
    assert last["error"]["code"] == "provider_unavailable"
    message = last["error"]["message"]
    assert message.startswith("segmind: ") and "after 2 attempts" in message


async def test_a_job_that_never_finishes_times_out(make_settings, http):
    async with hub_with(make_settings, task_timeout_seconds=1) as hub:
        await inject(http, hub, "atlascloud", "hang")
        events, last, record = await finish(http, hub, await submit(http, hub, "atlascloud"))
    assert events == ["task.queued", "task.submitted", "task.timed_out"]
    assert record["status"] == "timed_out" and last["error"]["code"] == "timed_out"
    assert last["error"]["message"] == "no result within 1 s"


async def test_a_submit_with_no_answer_is_never_sent_again(make_settings, http):
    """Segmind holds the request past the hub's timeout (and would still bill it): the
    outcome is unknown, Segmind sends no callback, so the task fails at once with
    outcome_unknown and the job is not sent a second time."""
    extra = (("HUB_SEGMIND_REQUEST_TIMEOUT", "0.5"),)
    async with hub_with(make_settings, *extra, task_timeout_seconds=30) as hub:
        await inject(http, hub, "segmind", "hang", 3)
        events, last, record = await finish(http, hub, await submit(http, hub, "segmind"))
        faults = (await http.get(f"{hub.url}/sandbox/segmind/_sandbox/faults")).json()
    assert events == ["task.queued", "task.failed"]
    # One hang taken: one send.
    assert record["attempts"] == 1 and faults["pending"] == [{"kind": "hang", "count": 2}]
    assert last["error"]["code"] == "outcome_unknown"
    assert "may have charged" in last["error"]["message"]
    assert last["error"]["message"].startswith("segmind: ")


async def test_duplicate_callback_is_applied_once(make_settings, http):
    async with hub_with(make_settings) as hub:
        await inject(http, hub, "eachlabs", "duplicate_callback")
        task = await submit(http, hub, "eachlabs")
        events, _, record = await finish(http, hub, task)
        attempts: list[dict[str, object]] = []

        async def both_sent() -> bool:
            # The duplicate may still be on its way when the task has already ended.
            log = await http.get(
                f"{hub.url}/sandbox/eachlabs/v1/webhooks/{record['provider_task_id']}",
                headers={"x-api-key": "sandbox"},
            )
            attempts[:] = log.json()["attempts"]
            return len(attempts) >= 2

        await until(both_sent, timeout=10, every=0.05)
        stored = await hub.state.store.events_after(EventQuery(task_id=task["id"]), 0, 100)
    assert events == SUCCEEDED
    assert [e.type for e in stored] == SUCCEEDED
    assert len(attempts) == 2 and all(a["status_code"] == 200 for a in attempts)


async def test_callback_before_the_submit_response_is_correlated(make_settings, http):
    async with hub_with(make_settings) as hub:
        await inject(http, hub, "acedata", "callback_before_response")
        events, _last, record = await finish(http, hub, await submit(http, hub, "acedata"))
    assert events == SUCCEEDED
    assert record["provider_task_id"]


async def test_lost_callback_falls_back_to_the_status_endpoint(make_settings, http):
    poll_soon = (("HUB_EACHLABS_FIRST_POLL_AFTER", "0.2"), ("HUB_EACHLABS_POLL_INTERVAL", "0.1"))
    async with hub_with(make_settings, *poll_soon) as hub:
        await inject(http, hub, "eachlabs", "lost_callback")
        events, _, record = await finish(http, hub, await submit(http, hub, "eachlabs"))
    assert events == SUCCEEDED and record["status"] == "succeeded"


async def test_lost_acedata_callback_falls_back_to_the_tasks_lookup(make_settings, http):
    poll_soon = (("HUB_ACEDATA_FIRST_POLL_AFTER", "0.2"), ("HUB_ACEDATA_POLL_INTERVAL", "0.1"))
    async with hub_with(make_settings, *poll_soon) as hub:
        await inject(http, hub, "acedata", "lost_callback")
        events, _, _ = await finish(http, hub, await submit(http, hub, "acedata"))
    assert events == SUCCEEDED


@pytest.mark.parametrize(
    ("provider", "reason"),
    [
        ("acedata", "api_error"),
        ("eachlabs", "PROVIDER_REJECTED"),
        ("atlascloud", "rejected by the safety system"),
        ("segmind", "Insufficient credits"),
    ],
)
async def test_a_failed_job_fails_the_task_with_the_providers_reason(
    make_settings, http, provider, reason
):
    async with hub_with(make_settings) as hub:
        await inject(http, hub, provider, "fail")
        events, last, record = await finish(http, hub, await submit(http, hub, provider))
    assert events[0] == "task.queued" and events[-1] == "task.failed"
    assert record["status"] == "failed" and record["error"] == last["error"]
    message = last["error"]["message"]
    assert message.startswith(f"{provider}: ") and reason in message


async def test_faults_combined_across_many_tasks_each_ends_once(make_settings, http):
    """429 bursts, 5xx, duplicate and early callbacks, a lost callback and a hang, queued
    at once across the four providers while 24 tasks run: every task ends exactly once,
    the one that hit the hang times out, every other succeeds."""
    poll_soon = (
        ("HUB_EACHLABS_FIRST_POLL_AFTER", "0.3"),
        ("HUB_EACHLABS_POLL_INTERVAL", "0.1"),
        ("HUB_ACEDATA_FIRST_POLL_AFTER", "0.3"),
        ("HUB_ACEDATA_POLL_INTERVAL", "0.1"),
    )
    async with hub_with(make_settings, *poll_soon, task_timeout_seconds=4) as hub:
        for provider, kind, count in [
            ("acedata", "429", 3),
            ("acedata", "callback_before_response", 2),
            ("acedata", "duplicate_callback", 2),
            ("eachlabs", "duplicate_callback", 3),
            ("eachlabs", "lost_callback", 1),
            ("segmind", "500", 2),
            ("atlascloud", "hang", 1),
        ]:
            await inject(http, hub, provider, kind, count)
        providers = ["acedata", "eachlabs", "atlascloud", "segmind"] * 6
        tasks = await asyncio.gather(*(submit(http, hub, p) for p in providers))
        results = await asyncio.gather(*(finish(http, hub, t) for t in tasks))
        stored = {
            t["id"]: [
                e.type
                for e in await hub.state.store.events_after(EventQuery(task_id=t["id"]), 0, 100)
            ]
            for t in tasks
        }
    terminal = {"task.succeeded", "task.failed", "task.timed_out"}
    for task, (events, _, record) in zip(tasks, results, strict=True):
        assert sum(e in terminal for e in stored[task["id"]]) == 1, stored[task["id"]]
        assert events == stored[task["id"]]
        assert record["status"] in ("succeeded", "timed_out"), record
    statuses = [record["status"] for _, _, record in results]
    assert statuses.count("timed_out") == 1
    assert statuses.count("succeeded") == len(tasks) - 1
