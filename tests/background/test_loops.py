"""Background loops survive their errors and say how they are, and /healthz names any
that is dead, failing or stuck."""

from __future__ import annotations

import asyncio

import pytest

from hub.background.loops import Health, forever
from tests.helpers import until


async def test_a_loop_survives_its_errors_and_reports_them():
    health = Health()
    component = health.component("work", stuck_after=10)
    calls = []

    async def step() -> float:
        calls.append(1)
        if len(calls) <= 3:
            raise OSError("store gone")
        return 0.01

    component.task = asyncio.create_task(forever(component, step, backoff=0.01))
    try:
        await until(lambda: component.failures == 3, timeout=5)
        assert health.report()[1]["work"]["state"] == "failing"
        assert health.report()[1]["work"]["last_error"] == "OSError: store gone"
        await until(lambda: len(calls) > 5, timeout=5)
        # One report read once: two reads apart differ in seconds_since_beat.
        healthy, components = health.report()
        assert healthy and list(components) == ["work"]
        assert components["work"]["state"] == "ok"
    finally:
        component.task.cancel()


async def test_a_loop_whose_task_ended_is_dead_and_one_that_hangs_is_stuck():
    health = Health()
    dead = health.component("dead", stuck_after=10)
    dead.task = asyncio.create_task(asyncio.sleep(0))
    await dead.task
    stuck = health.component("stuck", stuck_after=0.05)
    never = asyncio.Event()

    async def hang() -> float:
        await never.wait()
        return 0.0

    stuck.task = asyncio.create_task(forever(stuck, hang))
    try:
        await until(lambda: not health.report()[0], timeout=5)
        await asyncio.sleep(0.1)
        healthy, shown = health.report()
        assert not healthy
        assert shown["dead"]["state"] == "dead" and shown["stuck"]["state"] == "stuck"
    finally:
        stuck.task.cancel()


async def test_healthz_names_a_failing_loop_until_it_recovers(client, state, monkeypatch):
    answer = await client.get("/healthz")
    assert answer.status_code == 200
    assert set(answer.json()["components"]) >= {"keys", "retention", "streams", "webhooks"}

    async def broken(*args: object) -> bool:
        raise ConnectionError("the store is away")

    monkeypatch.setattr(state.store, "enqueue_webhooks", broken)

    async def named() -> bool:
        answer = await client.get("/healthz")
        return answer.status_code == 503 and "webhooks" in answer.json()["unwell"]

    await until(named, timeout=10, every=0.1)
    body = (await client.get("/healthz")).json()
    assert body["components"]["webhooks"]["last_error"] == "ConnectionError: the store is away"
    monkeypatch.undo()
    await until(lambda: _ok(client), timeout=20, every=0.2)


async def _ok(client) -> bool:
    return (await client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("name", ["keys", "retention", "streams", "webhooks"])
async def test_each_loop_beats(client, state, name):
    await until(lambda: state.health.components[name].last_beat is not None, timeout=10)
