"""Revocation revokes: once a key made with `hub keys` is revoked, its open streams end,
its watch URLs open nothing and its webhooks stop, within the key refresh."""

from __future__ import annotations

import contextlib
import hashlib
import time

import pytest

from hub.access.keys import tenant
from hub.store.base import ApiKey
from tests.helpers import live_hub, receiver, stream, until

KEY = "hub_revoked-soon-key"


@pytest.fixture
async def hub(make_settings):
    async with live_hub(make_settings(allow_loopback_urls=True)) as live:
        digest = hashlib.sha256(KEY.encode()).digest()
        record = ApiKey("key_0123456789ab", tenant(digest), digest, "soon", time.time())
        await live.state.store.add_api_key(record)
        await live.state._load_keys()
        yield live


async def test_revoking_a_key_ends_what_it_made(hub, http):
    auth = {"authorization": f"Bearer {KEY}"}
    async with receiver() as inbox:
        made = await http.post(
            f"{hub.url}/v1/channels", headers=auth, json={"webhook_urls": [inbox.url]}
        )
        assert made.status_code == 201, made.text
        channel = made.json()
        await http.post(channel["callback_url"], json={"n": 1})
        await until(lambda: len(inbox.received) == 1, timeout=10)
        async with stream(http, channel["watch_url"]) as sse:
            assert await hub.state.store.revoke_api_key("key_0123456789ab", time.time())
            # The open stream ends by itself (the key refresh runs every 2 s).
            with contextlib.suppress(EOFError):
                while True:
                    await sse.next(15)
        assert (await http.get(f"{hub.url}/v1/channels", headers=auth)).status_code == 401
        watch = await http.get(channel["watch_url"])
        assert watch.status_code == 401 and watch.json()["error"]["code"] == "revoked"
        # Its callback URLs take nothing more, so its webhook is sent nothing more.
        refused = await http.post(channel["callback_url"], json={"n": 2})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "revoked"
        history = await hub.state.store.list_deliveries(channel["id"], 10)
        assert len(history) == 1
        assert len(inbox.received) == 1
