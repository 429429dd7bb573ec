"""Fallback routing through the sandbox: a task moves to its next provider only when the
one it is on certainly did not bill it, and the emulators' ledgers say so."""

import contextlib

import pytest

from tests.helpers import AUTH, data_url, live_hub, make_png, stream
from tests.tasks.test_faults import finish, hub_with, inject
from tests.tasks.test_money_matrix import QUICK, ledger

REROUTED = "task.rerouted"


async def submit_route(http, hub, route, **options):
    body = {
        "provider": route,
        "input": {"prompt": "p", "images": [data_url(make_png())], **options},
    }
    response = await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()


async def billed(http, hub, provider) -> int:
    """Jobs the provider's ledger says it billed."""
    return sum(1 for paid in (await ledger(http, hub, provider)).values() if paid)


@contextlib.asynccontextmanager
async def frames_of(http, task, until=None):
    """The task's frames with data, until the stream ends or an ``until`` event came."""
    seen = []
    async with stream(http, task["stream_url"], AUTH) as sse:
        with contextlib.suppress(EOFError):
            while True:
                frame = await sse.next(30)
                if frame.data:
                    seen.append(frame)
                    if frame.event == until:
                        break
    yield seen


async def test_a_provider_that_is_down_hands_the_task_to_the_next(make_settings, http):
    # Segmind's address answers nothing: the connection is refused, nothing was sent.
    async with hub_with(make_settings, ("HUB_SEGMIND_URL", "http://127.0.0.1:9")) as hub:
        task = await submit_route(http, hub, ["segmind", "atlascloud"])
        assert task["provider"] == "segmind"
        events, _, record = await finish(http, hub, task)
        atlas = await billed(http, hub, "atlascloud")
    assert events == ["task.queued", REROUTED, "task.submitted", "task.succeeded"]
    assert record["status"] == "succeeded" and record["provider"] == "atlascloud"
    [step, now] = record["route"]
    assert step["provider"] == "segmind" and step["outcome"] == "unavailable"
    assert step["billed"] is False and step["attempts"] == 1 and "segmind" in step["reason"]
    assert now == {"provider": "atlascloud", "outcome": "succeeded", "billed": True,
                   "attempts": 1}  # fmt: skip
    assert atlas == 1


async def test_a_5xx_before_acceptance_moves_the_task_and_only_the_second_bills(
    make_settings, http
):
    async with hub_with(make_settings) as hub:
        await inject(http, hub, "eachlabs", "500")
        task = await submit_route(http, hub, ["eachlabs", "segmind"])
        async with frames_of(http, task) as frames:
            pass
        record = await _record(http, hub, task)
        each, seg = await billed(http, hub, "eachlabs"), await billed(http, hub, "segmind")
    moves = [frame.json for frame in frames if frame.event == REROUTED]
    assert len(moves) == 1
    move = moves[0]
    assert (move["from"], move["to"], move["reason"]) == ("eachlabs", "segmind", "unavailable")
    assert move["error"]["code"] == "provider_unavailable" and move["task_id"] == task["id"]
    assert record["status"] == "succeeded" and record["provider"] == "segmind"
    assert (each, seg) == (0, 1)
    assert [s["billed"] for s in record["route"]] == [False, True]


async def test_an_unknown_outcome_never_moves_the_task(make_settings, http):
    # Segmind takes the job (and bills it) and its answer never comes in time: it may have
    # been billed, so neither Segmind nor the next provider is sent it again.
    async with hub_with(make_settings, *QUICK, task_timeout_seconds=6) as hub:
        await inject(http, hub, "segmind", "hang")
        task = await submit_route(http, hub, ["segmind", "atlascloud"])
        events, _, record = await finish(http, hub, task)
        atlas = await ledger(http, hub, "atlascloud")
    assert REROUTED not in events
    assert record["status"] == "failed" and record["error"]["code"] == "outcome_unknown"
    assert record["provider"] == "segmind" and len(record["route"]) == 1
    assert atlas == {}


async def test_a_job_that_ran_and_failed_is_the_answer_not_an_outage(make_settings, http):
    async with hub_with(make_settings) as hub:
        await inject(http, hub, "atlascloud", "fail")
        task = await submit_route(http, hub, ["atlascloud", "segmind"])
        events, _, record = await finish(http, hub, task)
        seg = await ledger(http, hub, "segmind")
    assert REROUTED not in events and events[-1] == "task.failed"
    assert record["provider"] == "atlascloud" and seg == {}


async def test_a_rate_limit_beyond_the_tasks_patience_moves_it(make_settings, http):
    # Eachlabs' 429 asks for 60 s; the task waits 10 s at most for one provider.
    async with hub_with(make_settings, task_patience_seconds=10) as hub:
        await inject(http, hub, "eachlabs", "429")
        task = await submit_route(http, hub, ["eachlabs", "segmind"])
        events, _, record = await finish(http, hub, task)
    assert events == ["task.queued", REROUTED, "task.submitted", "task.succeeded"]
    assert record["route"][0]["outcome"] == "rate_limited"
    assert record["provider"] == "segmind"


async def test_a_rate_limit_within_the_tasks_patience_is_waited_for(make_settings, http):
    async with hub_with(make_settings, task_patience_seconds=120) as hub:
        await inject(http, hub, "eachlabs", "429")
        task = await submit_route(http, hub, ["eachlabs", "segmind"])
        async with frames_of(http, task, until="task.retrying") as frames:
            pass
        record = await _record(http, hub, task)
    assert [frame.event for frame in frames] == ["task.queued", "task.retrying"]
    assert record["provider"] == "eachlabs" and record["status"] == "queued"
    assert record["next_attempt_at"] is not None


async def test_a_provider_not_configured_here_is_skipped(make_settings, http):
    # A hub with Segmind alone configured (pointed at another hub's emulator): AceData,
    # named first, has no key here.
    async with hub_with(make_settings) as sandbox:
        segmind = (
            ("HUB_SEGMIND_API_KEY", "sandbox"),
            ("HUB_SEGMIND_URL", f"{sandbox.url}/sandbox/segmind"),
        )
        only = make_settings(extra_env=segmind, allow_loopback_urls=True)
        async with live_hub(only) as hub:
            task = await submit_route(http, hub, ["acedata", "segmind"])
            events, _, record = await finish(http, hub, task)
            alone = await http.post(
                f"{hub.url}/v1/tasks",
                json={"provider": "acedata", "input": {"prompt": "p", "images": ["x"]}},
                headers=AUTH,
            )
        seg = await billed(http, sandbox, "segmind")
    assert events == ["task.queued", REROUTED, "task.submitted", "task.succeeded"]
    assert record["route"][0] == {
        "provider": "acedata",
        "outcome": "not_configured",
        "billed": False,
        "reason": "acedata: not configured on this hub (HUB_ACEDATA_API_KEY is not set)",
    }
    assert seg == 1
    # Named alone, a provider that is not configured is refused before anything is made.
    assert alone.status_code == 422 and alone.json()["error"]["field"] == "provider"


@pytest.mark.parametrize(
    ("route", "options", "field", "says"),
    [
        (["segmind", "segmind"], {}, "provider", "names segmind more than once"),
        ([], {}, "provider", ""),
        (["segmind", "dalle"], {}, "provider[1]", ""),
        # Every provider the task may reach must make what it asks: AtlasCloud makes one.
        (["eachlabs", "atlascloud"], {"n": 2}, "input.n", "atlascloud"),
    ],
)
async def test_a_route_that_cannot_hold_is_refused(make_settings, http, route, options, field,
                                                   says):  # fmt: skip
    async with hub_with(make_settings) as hub:
        body = {"provider": route, "input": {"prompt": "p", "images": [data_url(make_png())],
                                             **options}}  # fmt: skip
        response = await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and says in error["message"]


async def test_the_reservation_shrinks_to_the_providers_left(make_settings, http):
    # The estimate is the dearest on the route (Segmind, about $0.14 a call), and once the
    # task left Segmind, AtlasCloud's own (low quality, square: $0.011).
    async with hub_with(make_settings, ("HUB_SEGMIND_URL", "http://127.0.0.1:9")) as hub:
        task = await submit_route(
            http, hub, ["segmind", "atlascloud"], quality="low", size="1024x1024"
        )
        first = (await http.get(f"{hub.url}/v1/tasks/{task['id']}", headers=AUTH)).json()
        _, _, record = await finish(http, hub, task)
    assert first["cost"]["estimated_usd"] >= 0.1
    assert record["cost"] == {"estimated_usd": 0.011, "billed_usd": 0.011, "currency": "USD"}


async def _record(http, hub, task):
    return (await http.get(f"{hub.url}/v1/tasks/{task['id']}", headers=AUTH)).json()
