"""Dedupe that fits an inbox (issue 14): a delivery is a duplicate only when its body, its
query string and the sender's delivery id match one accepted on the same channel within
HUB_DEDUPE_WINDOW; where the sender names its delivery, that id alone decides. A channel
may turn it off. The issue's cases come first."""

import time

import pytest

from hub.inbox import intake
from tests.helpers import AUTH


async def new_channel(client, **body):
    response = await client.post("/v1/channels", json=body or None, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


async def send(client, url, **kwargs):
    response = await client.post(url, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()["duplicate"]


async def stored(client, channel):
    page = await client.get(
        f"/v1/channels/{channel['id']}/deliveries", params={"limit": 200}, headers=AUTH
    )
    return page.json()["deliveries"]


# -- the cases: each was answered duplicate and never shown ----------------------


async def test_same_body_another_query_string_is_two_deliveries(client):
    channel = await new_channel(client)
    url = channel["callback_url"]
    assert not await send(client, url + "?event=a", json={"same": True})
    assert not await send(client, url + "?event=b", json={"same": True})
    assert [d["query"] for d in await stored(client, channel)] == ["event=b", "event=a"]


async def test_two_empty_pings_that_differ_only_in_the_query(client):
    channel = await new_channel(client)
    url = channel["callback_url"]
    assert not await send(client, url + "?ping=1")
    assert not await send(client, url + "?ping=2")
    assert len(await stored(client, channel)) == 2


async def test_same_body_other_sender_delivery_ids(client):
    channel = await new_channel(client)
    for header in ["webhook-id", "svix-id", "x-github-delivery", "idempotency-key"]:
        for n in (1, 2):
            headers = {header: f"{header}-{n}"}
            assert not await send(client, channel["callback_url"], json={"a": 1}, headers=headers)
    assert len(await stored(client, channel)) == 8


async def test_a_test_payload_sent_again_after_the_window(client, state):
    channel = await new_channel(client)
    body = b'{"test": "payload"}'
    week_ago = time.time() - 7 * 86400
    claims = state.signer.verify("hub.callback.v1", channel["callback_url"].rsplit("/", 1)[1])
    old = intake.Arrival(
        url_digest=claims.digest(),
        headers=[(b"content-type", b"application/json")],
        query="",
        body=body,
        received_at=week_ago,
    )
    delivery = intake.channel_delivery(
        old, channel["id"], 1 << 20, dedupe_window=state.settings.dedupe_window_seconds
    )
    assert await state.store.add_delivery(delivery) is not None
    headers = {"content-type": "application/json"}
    assert not await send(client, channel["callback_url"], content=body, headers=headers)
    # ... and within the window, the same again is the sender's retry.
    assert await send(client, channel["callback_url"], content=body, headers=headers)
    assert len(await stored(client, channel)) == 2


# -- what stays a duplicate ---------------------------------------------------------------


async def test_a_retry_of_the_same_request_is_a_duplicate(client):
    channel = await new_channel(client)
    url = channel["callback_url"] + "?event=a"
    assert not await send(client, url, json={"a": 1})
    assert await send(client, url, json={"a": 1})
    assert len(await stored(client, channel)) == 1


async def test_the_senders_id_alone_decides(client):
    channel = await new_channel(client)
    url = channel["callback_url"]
    # A retry whose body changed (a timestamp in it, say) is still the same delivery...
    assert not await send(client, url, json={"at": 1}, headers={"webhook-id": "msg_1"})
    assert await send(client, url + "?x=1", json={"at": 2}, headers={"webhook-id": "msg_1"})
    # ... and the first id present is the one that counts.
    assert not await send(
        client, url, json={"at": 1}, headers={"svix-id": "msg_2", "idempotency-key": "k"}
    )
    assert await send(client, url, json={"at": 9}, headers={"svix-id": "msg_2"})
    assert len(await stored(client, channel)) == 2


async def test_dedupe_is_per_channel_across_its_urls(client):
    channel = await new_channel(client)
    other = await client.post("/v1/callback-urls", json={"channel_id": channel["id"]}, headers=AUTH)
    assert not await send(client, channel["callback_url"], json={"a": 1})
    assert await send(client, other.json()["callback_url"], json={"a": 1})
    second = await new_channel(client)
    assert not await send(client, second["callback_url"], json={"a": 1})


async def test_a_channel_can_turn_dedupe_off(client):
    channel = await new_channel(client, dedupe=False)
    assert channel["dedupe"] is False
    for _ in range(3):
        assert not await send(client, channel["callback_url"], json={"a": 1})
    assert not await send(
        client, channel["callback_url"], json={"a": 1}, headers={"webhook-id": "1"}
    )
    assert not await send(
        client, channel["callback_url"], json={"a": 1}, headers={"webhook-id": "1"}
    )
    assert len(await stored(client, channel)) == 5


@pytest.mark.parametrize("value", ["no", 0, None])
async def test_dedupe_must_be_a_boolean(client, value):
    response = await client.post("/v1/channels", json={"dedupe": value}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "dedupe"
