"""A webhook attempt's lease is short and renewed while the attempt is in flight: a slow
receiver is never sent the same attempt twice by a live hub. (A dead replica's attempt
taken over within about a lease, with kill -9 on PostgreSQL: tests/behaviour/
test_webhook_takeover.py.)"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import AUTH, live_hub, until
from tests.webhooks.holding import holding

LEASE = 1.0


@pytest.fixture
async def hub(make_settings):
    settings = make_settings(
        allow_loopback_urls=True, webhook_lease_seconds=LEASE, webhook_timeout_seconds=60
    )
    async with live_hub(settings) as live:
        yield live


async def test_an_attempt_held_past_its_lease_is_not_sent_twice(hub, http):
    async with holding() as receiver:
        channel = (await http.post(f"{hub.url}/v1/channels", headers=AUTH)).json()
        body = {"url": receiver.url, "channel_id": channel["id"]}
        webhook = (await http.post(f"{hub.url}/v1/webhooks", json=body, headers=AUTH)).json()
        assert (await http.post(channel["callback_url"], json={"n": 1})).status_code == 200
        await until(lambda: len(receiver.arrivals) == 1, timeout=10)
        # Held for several leases: renewed meanwhile, so never claimed again. (A wait on
        # purpose: what is checked is that nothing arrives within it.)
        await asyncio.sleep(LEASE * 4)
        assert len(receiver.arrivals) == 1
        receiver.release.set()

        async def delivered() -> bool:
            url = f"{hub.url}/v1/webhooks/{webhook['id']}"
            shown = (await http.get(url, headers=AUTH)).json()
            return shown["pending"] == 0 and shown["last_success_at"] is not None

        await until(delivered, timeout=10)
    assert len(receiver.arrivals) == 1
