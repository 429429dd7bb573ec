import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from hub.providers.base import CallbackRejected, EditRequest, ProviderError, Resend
from hub.providers.eachlabs import Eachlabs
from hub.sandbox.app import SandboxSettings

from .helpers import (
    CALLBACK,
    FAST,
    KEY,
    Env,
    config,
    make_png,
    mock_client,
    open_image,
    sandbox_env,
    static_image,
)

SECRET = "whsec-per-task"
HMAC = replace(FAST, eachlabs_webhook_signing="hmac")


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    # The signed form, which these tests check; the plain default has its own tests.
    async with sandbox_env(HMAC) as environment:
        yield environment


def adapter(env: Env, **options: Any) -> Eachlabs:
    return Eachlabs(env.config("eachlabs"), env.client, **options)


def edit(env: Env, **changes: Any) -> EditRequest:
    request = EditRequest(
        task_id="task_1",
        prompt="add a hat",
        images=(env.world.image(),),
        size="1536x1024",
        callback_url=CALLBACK,
        callback_secret=SECRET,
    )
    return replace(request, **changes)


async def webhook(env: Env, **changes: Any) -> tuple[Eachlabs, str, httpx.Request]:
    provider = adapter(env)
    submitted = await provider.submit(edit(env, **changes))
    assert submitted.state == "pending"
    return provider, submitted.provider_task_id or "", await env.callback()


async def test_submit_then_signed_webhook_and_poll(env: Env):
    provider, prediction_id, delivery = await webhook(env, quality="high")
    assert delivery.headers["X-Webhook-Signature"].startswith("sha256=")
    outcome = await provider.parse_callback(delivery.headers, delivery.content, SECRET)
    assert (outcome.state, outcome.provider_task_id) == ("succeeded", prediction_id)
    (output,) = outcome.outputs
    assert output.url is not None
    assert output.content_type == "image/png"
    image = open_image(await env.download(output.url))
    assert (image.format, image.size) == ("PNG", (1536, 1024))

    polled = await provider.poll(prediction_id)
    assert polled.state == "succeeded"
    assert polled.outputs == outcome.outputs
    assert polled.detail["status"] == "success"
    assert "predict_time" in polled.detail


async def test_the_request_uses_numbered_image_fields(env: Env):
    images = (env.world.image(), env.world.image("image-2.png", make_png((20, 20))))
    mask = env.world.image("mask.png", make_png((64, 48), (0, 0, 0, 0)))
    provider = adapter(env)
    submitted = await provider.submit(edit(env, images=images, mask=mask, n=2, quality="low"))
    await env.sandbox.wait_idle()
    response = await env.client.get(
        f"/eachlabs/v1/prediction/{submitted.provider_task_id}", headers={"X-API-Key": KEY}
    )
    sent = response.json()["input"]
    assert sent["image_url_1"] == "http://images.test/image-1.png"
    assert sent["image_url_2"] == "http://images.test/image-2.png"
    assert sent["mask_url"] == "http://images.test/mask.png"
    assert (sent["image_size"], sent["quality"], sent["number_of_images"]) == (
        "1536x1024",
        "low",
        2,
    )
    polled = await provider.poll(submitted.provider_task_id or "")
    assert len(polled.outputs) == 2


async def test_an_unfinished_prediction_is_pending(env: Env):
    env.fault("eachlabs", "stall")
    provider = adapter(env)
    submitted = await provider.submit(edit(env))
    polled = await provider.poll(submitted.provider_task_id or "")
    assert (polled.state, polled.detail["status"]) == ("pending", "processing")


async def test_a_failed_prediction_by_webhook_and_poll(env: Env):
    env.fault("eachlabs", "fail")
    provider, prediction_id, delivery = await webhook(env)
    outcome = await provider.parse_callback(delivery.headers, delivery.content, SECRET)
    assert outcome.state == "failed"
    assert outcome.error is not None
    assert outcome.error.startswith("PROVIDER_REJECTED: The provider rejected this request")
    polled = await provider.poll(prediction_id)
    assert (polled.state, polled.error) == ("failed", outcome.error)


@pytest.mark.parametrize("fail", [False, True])
async def test_the_legacy_webhook_shape(fail: bool):
    async with sandbox_env(SandboxSettings(latency=0, eachlabs_webhook_shape="legacy")) as env:
        if fail:
            env.fault("eachlabs", "fail")
        provider, prediction_id, delivery = await webhook(env)
        assert json.loads(delivery.content)["id"] == prediction_id
        outcome = await provider.parse_callback(delivery.headers, delivery.content, SECRET)
        assert outcome.provider_task_id == prediction_id
        if fail:
            assert outcome.state == "failed"
            assert "The provider rejected this request" in (outcome.error or "")
        else:
            assert outcome.state == "succeeded"
            assert open_image(await env.download(outcome.outputs[0].url or "")).size == (1536, 1024)


async def test_an_unsigned_webhook_is_read_when_no_secret_was_given(env: Env):
    provider, _, delivery = await webhook(env, callback_secret=None)
    assert "X-Webhook-Signature" not in delivery.headers
    outcome = await provider.parse_callback(delivery.headers, delivery.content, None)
    assert outcome.state == "succeeded"


async def test_signature_checks_refuse_forgeries(env: Env):
    provider, _, delivery = await webhook(env)
    headers = dict(delivery.headers)
    body = delivery.content
    tampered = body.replace(b'"succeeded"', b'"failed"')
    no_time = {k: v for k, v in headers.items() if k.lower() != "x-webhook-timestamp"}
    bad_time = {**headers, "x-webhook-timestamp": "yesterday"}
    bad_scheme = {
        **headers,
        "x-webhook-signature": headers["x-webhook-signature"].replace("sha256", "md5"),
    }
    cases = [
        (headers, tampered, SECRET),
        (headers, body, "another-secret"),
        (no_time, body, SECRET),
        (bad_time, body, SECRET),
        (bad_scheme, body, SECRET),
    ]
    for case_headers, case_body, secret in cases:
        with pytest.raises(CallbackRejected) as caught:
            await provider.parse_callback(case_headers, case_body, secret)
        assert caught.value.reason == "signature"
    # The same delivery, genuine, is accepted: the refusals above are the checks' doing.
    assert (await provider.parse_callback(headers, body, SECRET)).state == "succeeded"


@pytest.mark.parametrize("skew", [-301.0, 301.0])
async def test_a_stale_or_future_timestamp_is_refused(env: Env, skew: float):
    _, _, delivery = await webhook(env)
    sent_at = int(delivery.headers["X-Webhook-Timestamp"])
    late = adapter(env, clock=lambda: sent_at + skew)
    with pytest.raises(CallbackRejected) as caught:
        await late.parse_callback(delivery.headers, delivery.content, SECRET)
    assert caught.value.reason == "signature"
    assert "timestamp" in caught.value.message
    near = adapter(env, clock=lambda: sent_at + skew * 0.9)
    assert (
        await near.parse_callback(delivery.headers, delivery.content, SECRET)
    ).state == "succeeded"


def sign(body: bytes, secret: str = SECRET, timestamp: str | None = None) -> dict[str, str]:
    stamp = timestamp or str(int(time.time()))
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Webhook-Signature": f"sha256={digest}", "X-Webhook-Timestamp": stamp}


async def test_documented_webhook_bodies(env: Env):
    provider = adapter(env)
    failure = {
        "exec_id": "abc",
        "flow_id": None,
        "status": "failed",
        "output": [
            {
                "id": "",
                "status": "",
                "output": "",
                "error": {"error_code": "EXECUTION_TIMEOUT", "error_message": "took too long"},
            }
        ],
        "error": "",
    }
    body = json.dumps(failure).encode()
    outcome = await provider.parse_callback(sign(body), body, SECRET)
    assert (outcome.state, outcome.error) == ("failed", "EXECUTION_TIMEOUT: took too long")
    legacy: dict[str, Any] = {
        "id": "abc",
        "status": "failed",
        "output": None,
        "input": {},
        "logs": "Error: boom",
    }
    body = json.dumps(legacy).encode()
    outcome = await provider.parse_callback(sign(body), body, SECRET)
    assert (outcome.state, outcome.error) == ("failed", "Error: boom")
    for bad in (b"{", b'{"exec_id": "abc", "status": "thinking"}'):
        with pytest.raises(CallbackRejected) as caught:
            await provider.parse_callback(sign(bad), bad, SECRET)
        assert caught.value.reason == "unreadable"


async def test_rate_limit_carries_retry_after(env: Env):
    env.fault("eachlabs", "429")
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env))
    error = caught.value
    assert (error.retryable, error.status, error.retry_after) == (True, 429, 60.0)
    assert (
        error.message == "eachlabs: HTTP 429: Rate limit exceeded. Please retry after 60 seconds."
    )


async def test_a_server_error_is_retryable(env: Env):
    env.fault("eachlabs", "500")
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env))
    assert (caught.value.retryable, caught.value.status) == (True, 500)
    assert "Failed to create prediction" in caught.value.message


async def test_a_bad_key_is_final():
    async with sandbox_env(SandboxSettings(latency=0, api_key="the-right-key")) as env:
        with pytest.raises(ProviderError) as caught:
            await adapter(env).submit(edit(env))
    assert (caught.value.retryable, caught.value.status) == (False, 401)
    assert caught.value.message == "eachlabs: HTTP 401: Invalid or missing API key"


async def test_an_unknown_prediction_is_final(env: Env):
    with pytest.raises(ProviderError) as caught:
        await adapter(env).poll("no/such id")
    assert (caught.value.retryable, caught.value.status) == (False, 404)
    assert env.paths[-1] == "/eachlabs/v1/prediction/no%2Fsuch%20id"


@pytest.mark.parametrize(
    "answer, state, detail",
    [
        (
            {"status": "success", "output": {"url": "https://cdn.test/a.jpg"}},
            "succeeded",
            "image/jpeg",
        ),
        (
            {"status": "success", "output": ["https://cdn.test/a.png", "https://cdn.test/b"]},
            "succeeded",
            "image/png",
        ),
        ({"status": "success", "output": None}, "failed", "Eachlabs returned no image"),
        ({"status": "cancelled"}, "failed", "the prediction was cancelled at Eachlabs"),
        ({"status": "error", "output": None, "logs": "Error: no"}, "failed", "Error: no"),
        ({"status": "starting"}, "pending", None),
    ],
)
async def test_poll_answers(answer: dict[str, Any], state: str, detail: str | None):
    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        return httpx.Response(200, json={"id": "p1", **answer})

    async with mock_client(handler) as client:
        outcome = await Eachlabs(config("eachlabs"), client).poll("p1")
    assert outcome.state == state
    if state == "succeeded":
        assert outcome.outputs[0].content_type == detail
    elif state == "failed":
        assert outcome.error == detail


async def test_an_unknown_poll_status_is_an_error():
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "dreaming"})

    async with mock_client(handler) as client:
        with pytest.raises(ProviderError):
            await Eachlabs(config("eachlabs"), client).poll("p1")


async def test_wants_a_callback(env: Env):
    assert adapter(env).wants_callback("http://hub.local")


async def test_more_than_sixteen_images_are_refused_before_any_call(env: Env):
    images = tuple(env.world.image(f"image-{i}.png") for i in range(17))
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env, images=images))
    assert not caught.value.retryable
    assert env.paths == []


async def test_a_submit_answer_without_an_id_is_an_error():
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "error", "message": "model is paused"})

    async with mock_client(handler) as client:
        with pytest.raises(ProviderError) as caught:
            await Eachlabs(config("eachlabs"), client).submit(
                EditRequest("t", "p", (static_image(),))
            )
    assert caught.value.resend is Resend.UNKNOWN  # a 2xx: it may have been created
    assert caught.value.message.startswith(
        "eachlabs: answered 2xx without a prediction id: model is paused"
    )


async def test_the_plain_secret_alone_is_accepted_in_constant_time(env: Env):
    # What Eachlabs' current docs describe: the secret in X-Webhook-Secret, no signature.
    provider, _, delivery = await webhook(env)
    body = delivery.content
    plain = {"Content-Type": "application/json", "X-Webhook-Secret": SECRET}
    assert (await provider.parse_callback(plain, body, SECRET)).state == "succeeded"
    for headers in (
        {"X-Webhook-Secret": "another-secret"},
        {"X-Webhook-Secret": SECRET[:-1]},
        {"Content-Type": "application/json"},
    ):
        with pytest.raises(CallbackRejected) as caught:
            await provider.parse_callback(headers, body, SECRET)
        assert caught.value.reason == "signature"
    # Both present: both must hold, so a right secret does not carry a wrong signature.
    both = {**dict(delivery.headers), "x-webhook-signature": "sha256=" + "0" * 64}
    with pytest.raises(CallbackRejected):
        await provider.parse_callback(both, body, SECRET)


async def test_cancel_stops_a_running_prediction():
    async with sandbox_env(SandboxSettings(latency=30)) as env:
        provider = adapter(env)
        submitted = await provider.submit(edit(env))
        assert await provider.cancel(submitted.provider_task_id or "")
        assert env.paths[-1] == f"/eachlabs/v1/prediction/{submitted.provider_task_id}/cancel"
        outcome = await provider.poll(submitted.provider_task_id or "")
        assert (outcome.state, outcome.error) == (
            "failed",
            "the prediction was cancelled at Eachlabs",
        )
        assert not await provider.cancel("no-such-prediction")


async def test_the_emulators_default_plain_secret_webhook_is_accepted():
    async with sandbox_env() as env:
        provider, prediction_id, delivery = await webhook(env)
        assert "X-Webhook-Signature" not in delivery.headers
        assert delivery.headers["X-Webhook-Secret"] == SECRET
        outcome = await provider.parse_callback(delivery.headers, delivery.content, SECRET)
        assert (outcome.state, outcome.provider_task_id) == ("succeeded", prediction_id)
        with pytest.raises(CallbackRejected):
            await provider.parse_callback(delivery.headers, delivery.content, "other")
