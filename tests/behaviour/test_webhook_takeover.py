"""Two `hub serve` replicas on one PostgreSQL database and a webhook receiver that holds
its first request open. The replica sending the attempt keeps renewing its short lease, so
the other never sends it while it lives; killed with -9 mid-attempt, its attempt is taken
over by the other replica within about a lease (HUB_WEBHOOK_LEASE_SECONDS, 15 s). The
takeover time is printed, not asserted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.helpers import AUTH, until
from tests.postgres import fresh_database
from tests.processes import HubProcess, free_port, running
from tests.webhooks.holding import holding

pytestmark = pytest.mark.process

LEASE = 15.0


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async for url in fresh_database():
        yield url


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, connect=2)) as client:
        yield client


async def test_a_dead_replicas_webhook_attempt_is_taken_over(tmp_path, http, database):
    extra = {
        "HUB_DATABASE_URL": database,
        "HUB_ALLOW_LOOPBACK_URLS": "1",
        "HUB_WEBHOOK_LEASE_SECONDS": str(LEASE),
        # The receiver may hold an attempt far longer than a lease: renewals cover it.
        "HUB_WEBHOOK_TIMEOUT_SECONDS": "600",
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = HubProcess(tmp_path / "a", free_port(), extra=extra)
    second: HubProcess | None = None
    async with holding() as receiver:
        with running(first):
            await first.ready(http)
            channel = (await http.post(first.url + "/v1/channels", headers=AUTH)).json()
            body = {"url": receiver.url, "channel_id": channel["id"]}
            answer = await http.post(first.url + "/v1/webhooks", json=body, headers=AUTH)
            assert answer.status_code == 201, answer.text
            assert (await http.post(channel["callback_url"], json={"n": 1})).status_code == 200
            # Only the first replica runs yet: the attempt the receiver holds is its own.
            await until(lambda: len(receiver.arrivals) == 1, timeout=20)

            second = HubProcess(tmp_path / "b", free_port(), extra=extra)
            with running(second):
                await second.ready(http)
                # Live and renewing: not taken over, for well past one lease. (A wait on
                # purpose: what is checked is that nothing arrives within it.)
                await asyncio.sleep(LEASE * 1.7)
                assert len(receiver.arrivals) == 1, "sent twice while its sender lived"

                first.kill()
                killed = time.monotonic()
                await until(lambda: len(receiver.arrivals) == 2, timeout=LEASE * 4)
                takeover = receiver.arrivals[1].at - killed
                print(
                    f"\nwebhook attempt taken over {takeover:.2f} s after kill -9 (lease {LEASE:g} s)"
                )
                assert receiver.arrivals[1].webhook_id == receiver.arrivals[0].webhook_id

                async def delivered() -> bool:
                    url = f"{second.url}/v1/webhooks/{answer.json()['id']}"
                    shown = (await http.get(url, headers=AUTH)).json()
                    return shown["pending"] == 0 and shown["last_success_at"] is not None

                await until(delivered, timeout=20)
                assert len(receiver.arrivals) == 2
