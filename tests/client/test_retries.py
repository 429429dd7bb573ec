"""hub.client's submit against a live hub: sent with an Idempotency-Key, and sent again
with the same key and bytes when an attempt is cut or answered 5xx/409, so an attempt the
hub processed but whose answer was lost still makes one task."""

from __future__ import annotations

import httpx
import pytest

from hub.client import AsyncClient, HubError
from tests.helpers import KEY, live_hub, make_png, query_store

FAST = (("HUB_SANDBOX_LATENCY", "0"), ("HUB_ACEDATA_FIRST_POLL_AFTER", "5"))


@pytest.fixture
async def hub(make_settings):
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as live:
        yield live


class LoseAnswers(httpx.AsyncBaseTransport):
    """Sends every request on to the hub. The first ``lose`` answers to a submit are
    read in full (the hub did the work) and then lost: the connection is cut, or a
    proxy's 502 comes back instead."""

    def __init__(self, lose: int, how: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lose = lose
        self.how = how
        self.keys: list[str | None] = []
        self.bodies: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "POST" or request.url.path != "/v1/tasks":
            return response
        self.keys.append(request.headers.get("idempotency-key"))
        self.bodies.append(request.content)
        if self.lose == 0:
            return response
        self.lose -= 1
        await response.aread()
        await response.aclose()
        if self.how == "cut":
            raise httpx.ReadError("the connection was cut", request=request)
        return httpx.Response(502, json={"error": {"code": "bad_gateway", "message": "proxy"}})

    async def aclose(self) -> None:
        await self.inner.aclose()


async def task_count(hub) -> int:
    return int((await query_store(hub.state.store, "SELECT count(*) FROM tasks"))[0])


@pytest.mark.parametrize("how", ["cut", "502"])
async def test_a_lost_answer_is_retried_with_the_same_key_and_makes_one_task(hub, how):
    transport = LoseAnswers(1, how)
    async with AsyncClient(hub.url, KEY, transport=transport) as client:
        task = await client.submit("acedata", "make it blue", [make_png()])
        done = await client.wait(task["id"], timeout=30)
    assert done["status"] == "succeeded"
    assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
    assert transport.keys[0] and transport.bodies[0] == transport.bodies[1]
    assert await task_count(hub) == 1


async def test_every_submit_has_its_own_key_unless_given_one(hub):
    transport = LoseAnswers(0, "cut")
    async with AsyncClient(hub.url, KEY, transport=transport) as client:
        first = await client.submit("acedata", "p", [make_png()])
        second = await client.submit("acedata", "p", [make_png()])
        mine = await client.submit("acedata", "p", [make_png()], idempotency_key="mine")
        again = await client.submit("acedata", "p", [make_png()], idempotency_key="mine")
    assert first["id"] != second["id"] and mine["id"] == again["id"]
    assert len(set(transport.keys)) == 3
    assert await task_count(hub) == 3


async def test_retries_end_and_the_error_is_raised(hub):
    transport = LoseAnswers(5, "502")
    async with AsyncClient(hub.url, KEY, transport=transport, retries=1) as client:
        with pytest.raises(HubError) as failed:
            await client.submit("acedata", "p", [make_png()])
    assert failed.value.status == 502 and len(transport.keys) == 2
    assert await task_count(hub) == 1
