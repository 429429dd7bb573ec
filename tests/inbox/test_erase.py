"""Erase and revoke: a deleted channel takes its deliveries, events and URLs with it and
ends its streams; one callback URL can be revoked while the channel's others keep
working; a revoked API key's URLs stop too. On every replica."""

import contextlib
import time

import pytest

from hub.store.base import EventQuery
from tests.helpers import AUTH, OTHER_AUTH, live_hub, query_store, stream, until


async def new_channel(client, **body):
    response = await client.post("/v1/channels", json=body or None, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_deleted_channel_is_gone_everywhere(client, state):
    channel = await new_channel(client)
    cid = channel["id"]
    for n in range(3):
        assert (await client.post(channel["callback_url"], json={"n": n})).status_code == 200
    [first, *_] = (await client.get(f"/v1/channels/{cid}/deliveries", headers=AUTH)).json()[
        "deliveries"
    ]
    assert (await client.delete(f"/v1/channels/{cid}", headers=OTHER_AUTH)).status_code == 404
    response = await client.delete(f"/v1/channels/{cid}", headers=AUTH)
    assert response.status_code == 204 and response.content == b""
    for url in [
        f"/v1/channels/{cid}",
        f"/v1/channels/{cid}/deliveries",
        f"/v1/channels/{cid}/deliveries.ndjson",
        f"/v1/channels/{cid}/callback-urls",
        f"/v1/channels/{cid}/events",
        f"/v1/deliveries/{first['id']}",
        f"/v1/deliveries/{first['id']}/body",
    ]:
        assert (await client.get(url, headers=AUTH)).status_code == 404, url
    assert (await client.delete(f"/v1/channels/{cid}", headers=AUTH)).status_code == 404
    gone = await client.post(channel["callback_url"], json={"n": 9})
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone"
    # Nothing of it is left in the store.
    assert await state.store.events_after(EventQuery(channel_id=cid), 0, 10) == []
    for table in ["deliveries", "delivery_keys", "callback_urls", "events"]:
        row = await query_store(
            state.store, f"SELECT count(*) FROM {table} WHERE channel_id = '{cid}'"
        )
        assert row[0] == 0, table
    listed = (await client.get("/v1/channels", headers=AUTH)).json()["channels"]
    assert cid not in [c["id"] for c in listed]


async def test_deleting_a_channel_ends_its_open_streams(live, http):
    made = await http.post(f"{live.url}/v1/channels", headers=AUTH)
    channel = made.json()
    other = (await http.post(f"{live.url}/v1/channels", headers=AUTH)).json()
    async with stream(http, channel["watch_url"]) as sse, stream(http, other["watch_url"]) as kept:
        await sse.next()  # the retry hint: subscribed
        await kept.next()
        deleted = await http.delete(f"{live.url}/v1/channels/{channel['id']}", headers=AUTH)
        assert deleted.status_code == 204
        with pytest.raises(EOFError):
            while True:
                await sse.next(10)
        # Another channel's stream goes on.
        assert (await http.post(other["callback_url"], json={"n": 1})).status_code == 200
        (event,) = await kept.events(1)
        assert event.json["body"] == {"n": 1}


async def test_callback_urls_are_listed_and_one_is_revoked(client):
    channel = await new_channel(client)
    minted = await client.post(
        "/v1/callback-urls", json={"channel_id": channel["id"]}, headers=AUTH
    )
    assert minted.status_code == 201
    second = minted.json()
    assert second["id"].startswith("cbu_")
    for _ in range(2):
        await client.post(second["callback_url"], json={"n": time.time()})
    listed = await client.get(f"/v1/channels/{channel['id']}/callback-urls", headers=AUTH)
    assert listed.status_code == 200
    urls = listed.json()["callback_urls"]
    assert [u["id"] for u in urls][1] == second["id"]
    assert [u["deliveries"] for u in urls] == [0, 2]
    assert urls[0]["last_used_at"] is None and urls[1]["last_used_at"].endswith("Z")
    assert all(set(u) == {"id", "created_at", "expires_at", "revoked_at", "last_used_at",
                          "deliveries"} for u in urls)  # fmt: skip
    assert "callback_url" not in urls[0]  # a credential: shown once, when made
    # Another key can neither list nor revoke them.
    assert (
        await client.get(f"/v1/channels/{channel['id']}/callback-urls", headers=OTHER_AUTH)
    ).status_code == 404
    assert (
        await client.delete(f"/v1/callback-urls/{second['id']}", headers=OTHER_AUTH)
    ).status_code == 404
    revoked = await client.delete(f"/v1/callback-urls/{second['id']}", headers=AUTH)
    assert revoked.status_code == 204
    refused = await client.post(second["callback_url"], json={"n": 1})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "revoked"
    # The channel's first URL keeps working.
    assert (await client.post(channel["callback_url"], json={"n": 1})).status_code == 200
    after = (await client.get(f"/v1/channels/{channel['id']}/callback-urls", headers=AUTH)).json()
    assert after["callback_urls"][1]["revoked_at"] is not None


async def test_a_channel_keeps_its_own_retention(client, state):
    response = await client.post("/v1/channels", json={"retention_seconds": 0}, headers=AUTH)
    assert response.status_code == 422
    too_long = state.settings.retention_seconds + 1
    response = await client.post("/v1/channels", json={"retention_seconds": too_long}, headers=AUTH)
    assert response.json()["error"]["field"] == "retention_seconds"
    short = await new_channel(client, retention_seconds=60)
    assert short["retention_seconds"] == 60
    kept = await new_channel(client)
    for channel in (short, kept):
        await client.post(channel["callback_url"], json={"n": 1})
    # Two minutes on, the short one's history is gone, the other's stays.
    await state.store.prune_channels(time.time() + 120)
    for channel, left in ((short, 0), (kept, 1)):
        page = await client.get(f"/v1/channels/{channel['id']}/deliveries", headers=AUTH)
        assert len(page.json()["deliveries"]) == left
        events = await state.store.events_after(EventQuery(channel_id=channel["id"]), 0, 10)
        assert len(events) == left
    # ... and a stream resuming from before is told of the gap.
    assert await state.store.pruned_through(EventQuery(channel_id=short["id"])) >= 1


@pytest.fixture
async def replicas(make_settings, pg_url):
    settings = make_settings(database_url=pg_url)
    async with live_hub(settings) as a, live_hub(settings) as b:
        yield a, b


def on(replica, url):
    return f"{replica.url}/{url.split('/', 3)[3]}"


async def test_erase_and_revoke_reach_every_replica(replicas, http):
    a, b = replicas
    channel = (await http.post(f"{a.url}/v1/channels", headers=AUTH)).json()
    minted = await http.post(
        f"{a.url}/v1/callback-urls", json={"channel_id": channel["id"]}, headers=AUTH
    )
    second = minted.json()
    # B has looked both URLs up (and may remember them as fine for a moment).
    assert (await http.post(on(b, second["callback_url"]), json={"n": 1})).status_code == 200
    assert (await http.post(on(b, channel["callback_url"]), json={"n": 1})).status_code == 200
    assert (
        await http.delete(f"{a.url}/v1/callback-urls/{second['id']}", headers=AUTH)
    ).status_code == 204

    async def refused_on_b() -> bool:
        answer = await http.post(on(b, second["callback_url"]), json={"n": 2})
        return answer.status_code == 401

    await until(refused_on_b, timeout=5)
    assert (await http.post(on(b, channel["callback_url"]), json={"n": 3})).status_code == 200
    async with stream(http, on(b, channel["stream_url"]), AUTH) as sse:
        await sse.next()
        assert (
            await http.delete(f"{a.url}/v1/channels/{channel['id']}", headers=AUTH)
        ).status_code == 204
        with contextlib.suppress(EOFError):
            while True:
                await sse.next(10)

    async def gone_on_b() -> bool:
        answer = await http.post(on(b, channel["callback_url"]), json={"n": 4})
        return answer.status_code == 410

    await until(gone_on_b, timeout=5)
