"""Channel verifiers: a delivery whose signature does not check is refused (401
invalid_signature), stored nowhere and counted; one that checks is marked verified in its
event and its history. Signed with the real signing code where it exists (the
`standardwebhooks` package) and with GitHub's and Stripe's documented schemes."""

import base64
import datetime
import hashlib
import hmac
import time

import orjson
import pytest
from standardwebhooks import Webhook

from hub.inbox import verify
from hub.inbox.shapes import Verifier
from hub.store.base import EventQuery
from tests.helpers import AUTH

WHSEC = "whsec_" + base64.b64encode(b"a secret of twenty-four b").decode()
BODY = b'{"type": "invoice.paid",  "id": "evt_1"}'


async def channel_with(client, verifier):
    response = await client.post("/v1/channels", json={"verify": verifier}, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


async def history(client, channel):
    page = await client.get(f"/v1/channels/{channel['id']}/deliveries", headers=AUTH)
    return page.json()["deliveries"]


async def refused(client, state, channel, headers, body=BODY):
    response = await client.post(channel["callback_url"], content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_signature"
    assert await history(client, channel) == []
    assert await state.store.events_after(EventQuery(channel_id=channel["id"]), 0, 10) == []


async def accepted(client, state, channel, headers, body=BODY):
    response = await client.post(channel["callback_url"], content=body, headers=headers)
    assert response.status_code == 200, response.text
    [listed] = await history(client, channel)
    assert listed["verified"] is True
    [event] = await state.store.events_after(EventQuery(channel_id=channel["id"]), 0, 10)
    assert orjson.loads(event.data)["verified"] is True


def standard_headers(secret, body, msg_id="msg_1", at=None):
    stamp = datetime.datetime.fromtimestamp(at or time.time(), tz=datetime.UTC)
    signature = Webhook(secret).sign(msg_id, stamp, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": signature, "content-type": "application/json"}  # fmt: skip


async def test_standard_webhooks_signed_by_the_reference_code(client, state):
    channel = await channel_with(client, {"scheme": "standard-webhooks", "secret": WHSEC})
    assert channel["verify"] == {"scheme": "standard-webhooks", "secret_hint": "..." + WHSEC[-4:],
                                 "header": None, "encoding": None, "prefix": None}  # fmt: skip
    assert WHSEC not in str(channel)
    other = "whsec_" + base64.b64encode(b"another secret entirely!").decode()
    await refused(client, state, channel, standard_headers(other, BODY))
    await refused(client, state, channel, {"content-type": "application/json"})
    stale = standard_headers(WHSEC, BODY, at=time.time() - 3600)
    await refused(client, state, channel, stale)
    tampered = standard_headers(WHSEC, BODY)
    await refused(client, state, channel, tampered, BODY + b" ")
    await accepted(client, state, channel, standard_headers(WHSEC, BODY))


async def test_svix_spelling_of_the_headers(client, state):
    channel = await channel_with(client, {"scheme": "standard-webhooks", "secret": WHSEC})
    headers = {k.replace("webhook-", "svix-"): v for k, v in standard_headers(WHSEC, BODY).items()}
    await accepted(client, state, channel, headers)


async def test_github_documented_example(client, state):
    # docs.github.com, "Validating webhook deliveries": this secret and payload give this.
    secret, payload = "It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    channel = await channel_with(client, {"scheme": "github", "secret": secret})
    await refused(client, state, channel, {"x-hub-signature-256": "sha256=" + "0" * 64}, payload)
    await refused(client, state, channel, {}, payload)
    await accepted(client, state, channel, {"x-hub-signature-256": expected}, payload)


def stripe_header(secret, body, at):
    # Stripe's documented scheme: HMAC-SHA256 of "t.payload" keyed with the endpoint secret.
    signed = f"{at}.".encode() + body
    v1 = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={at},v1={v1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"


async def test_stripe_signature_with_its_tolerance(client, state):
    secret = "whsec_test_secret"
    channel = await channel_with(client, {"scheme": "stripe", "secret": secret})
    now = int(time.time())
    await refused(client, state, channel, {"stripe-signature": stripe_header("whsec_x", BODY, now)})
    await refused(
        client, state, channel, {"stripe-signature": stripe_header(secret, BODY, now - 301)}
    )
    await refused(client, state, channel, {"stripe-signature": "t=1,v1=zz"})
    await accepted(client, state, channel, {"stripe-signature": stripe_header(secret, BODY, now)})


def test_stripe_documented_header_shape():
    # Stripe's docs' example header (t=1492774577): checks at that time, not five minutes on.
    secret = "whsec_docs"
    header = stripe_header(secret, BODY, 1492774577)
    verifier = Verifier(scheme="stripe", secret=secret)
    verify.verify(verifier, {"stripe-signature": header}, BODY, now=1492774577 + 299)
    with pytest.raises(verify.SignatureMismatch):
        verify.verify(verifier, {"stripe-signature": header}, BODY, now=1492774577 + 301)


@pytest.mark.parametrize("encoding", ["hex", "base64"])
async def test_hmac_sha256_of_your_own_header(client, state, encoding):
    spec = {"scheme": "hmac-sha256", "secret": "s3cret-value", "header": "X-Signature",
            "encoding": encoding, "prefix": "sha256="}  # fmt: skip
    channel = await channel_with(client, spec)
    mac = hmac.new(b"s3cret-value", BODY, hashlib.sha256).digest()
    text = mac.hex() if encoding == "hex" else base64.b64encode(mac).decode()
    await refused(client, state, channel, {"x-signature": text})  # no prefix
    await accepted(client, state, channel, {"x-signature": "sha256=" + text})


async def test_refusals_are_counted(client, state):
    channel = await channel_with(client, {"scheme": "github", "secret": "x" * 16})
    await refused(client, state, channel, {"x-hub-signature-256": "sha256=00"})
    metrics = (await state.render_metrics()).decode()
    assert 'hub_callback_signatures_rejected_total{scheme="github"} 1.0' in metrics


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"scheme": "md5", "secret": "x"}, "verify.scheme"),
        ({"scheme": "github"}, "verify.secret"),
        ({"scheme": "github", "secret": ""}, "verify.secret"),
        ({"scheme": "hmac-sha256", "secret": "x"}, "verify.header"),
        ({"scheme": "github", "secret": "x", "header": "X-A"}, "verify"),
        ({"scheme": "standard-webhooks", "secret": "whsec_!!"}, "verify.secret"),
        ({"scheme": "hmac-sha256", "secret": "x", "header": "bad header"}, "verify.header"),
    ],
)
async def test_a_bad_verifier_names_the_field(client, spec, field):
    response = await client.post("/v1/channels", json={"verify": spec}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


async def test_secrets_are_never_shown_in_full(client, caplog):
    secret = "a-long-secret-never-shown"
    channel = await channel_with(client, {"scheme": "github", "secret": secret})
    for answer in [
        await client.get(f"/v1/channels/{channel['id']}", headers=AUTH),
        await client.get("/v1/channels", headers=AUTH),
        await client.post(channel["callback_url"], content=b"x"),
    ]:
        assert secret not in answer.text
    assert secret not in caplog.text
