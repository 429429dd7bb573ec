"""Redelivery: the stored request POSTed again, byte for byte with its headers (less the
hop-by-hop ones), to a URL or into the channel's outbound webhooks, under the outbound
URL rules."""

import orjson
import pytest
from standardwebhooks import Webhook

from tests.helpers import AUTH, OTHER_AUTH, receiver


@pytest.fixture
def settings(make_settings):
    return make_settings(allow_loopback_urls=True)


async def deliver(client, channel, **kwargs):
    response = await client.post(channel["callback_url"], **kwargs)
    assert response.status_code == 200
    page = await client.get(f"/v1/channels/{channel['id']}/deliveries", headers=AUTH)
    return page.json()["deliveries"][0]


async def test_the_stored_request_is_sent_again_as_it_came(client):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    body = b"a=1&b=%20two&a=3"  # a form: re-sent as these bytes, not as JSON
    delivery = await deliver(
        client, channel, content=body,
        headers={"content-type": "application/x-www-form-urlencoded", "x-signature": "s1",
                 "connection": "keep-alive", "te": "trailers"},
    )  # fmt: skip
    async with receiver(answers=[418]) as inbox:
        response = await client.post(
            f"/v1/deliveries/{delivery['id']}/redeliver", json={"url": inbox.url}, headers=AUTH
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["delivery_id"] == delivery["id"]
        [attempt] = answer["attempts"]
        assert attempt["status"] == 418
        assert attempt["error"] is None
        assert attempt["duration_ms"] >= 0
        [got] = inbox.received
    assert got.body == body
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert got.headers["x-signature"] == "s1"
    assert "te" not in got.headers
    assert got.headers["host"].startswith("127.0.0.1:")


async def test_without_a_url_the_event_goes_to_the_channels_webhooks(client):
    async with receiver() as inbox:
        made = await client.post("/v1/channels", json={"webhook_urls": [inbox.url]}, headers=AUTH)
        channel = made.json()
        secret = channel["webhooks"][0]["secret"]
        delivery = await deliver(client, channel, json={"n": 1})
        response = await client.post(f"/v1/deliveries/{delivery['id']}/redeliver", headers=AUTH)
        assert response.status_code == 200, response.text
        [attempt] = response.json()["attempts"]
        assert attempt["status"] == 200
        assert attempt["url"] == inbox.url
        sent = [r for r in inbox.received if orjson.loads(r.body)["type"] == "callback.received"]
        assert sent
        event = Webhook(secret).verify(sent[-1].body, sent[-1].headers)
        assert event["data"]["delivery_id"] == delivery["id"]


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "http://user:pw@127.0.0.1/x", "http://10.0.0.1/x"]
)
async def test_a_url_the_hub_may_not_send_to_is_422(client, url):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    delivery = await deliver(client, channel, json={"n": 1})
    response = await client.post(
        f"/v1/deliveries/{delivery['id']}/redeliver", json={"url": url}, headers=AUTH
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "url"


async def test_an_unreachable_receiver_is_reported_not_raised(client):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    delivery = await deliver(client, channel, json={"n": 1})
    response = await client.post(
        f"/v1/deliveries/{delivery['id']}/redeliver",
        json={"url": "http://127.0.0.1:9/x"},
        headers=AUTH,
    )
    assert response.status_code == 200
    [attempt] = response.json()["attempts"]
    assert attempt["status"] is None
    assert attempt["error"]


async def test_another_keys_delivery_cannot_be_redelivered(client):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    delivery = await deliver(client, channel, json={"n": 1})
    response = await client.post(
        f"/v1/deliveries/{delivery['id']}/redeliver",
        json={"url": "http://127.0.0.1:9/x"},
        headers=OTHER_AUTH,
    )
    assert response.status_code == 404
