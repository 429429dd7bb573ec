import base64
import json
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hub.providers.atlascloud import JWKS_PATH, AtlasCloud
from hub.providers.base import CallbackRejected, EditRequest, ErrorCode, ProviderError, Resend
from hub.sandbox.app import SandboxSettings

from .helpers import (
    CALLBACK,
    KEY,
    Env,
    config,
    make_png,
    mock_client,
    open_image,
    sandbox_env,
    static_image,
)

WEBHOOKS = SandboxSettings(latency=0, allow_insecure_webhooks=True)
JWKS = f"/atlascloud{JWKS_PATH}"


def adapter(env: Env, **options: Any) -> AtlasCloud:
    return AtlasCloud(env.config("atlascloud"), env.client, **options)


def edit(env: Env, **changes: Any) -> EditRequest:
    request = EditRequest(
        task_id="task_1", prompt="comic style", images=(env.world.image(),), size="1024x1536"
    )
    return replace(request, **changes)


async def webhook(env: Env, **changes: Any) -> tuple[AtlasCloud, str, httpx.Request]:
    provider = adapter(env)
    submitted = await provider.submit(edit(env, callback_url=CALLBACK, **changes))
    return provider, submitted.provider_task_id or "", await env.callback()


@pytest.mark.parametrize("shape", ["official", "seed"])
async def test_upload_submit_poll(shape: str):
    async with sandbox_env(SandboxSettings(latency=0, atlas_upload_shape=shape)) as env:
        provider = adapter(env)
        mask = env.world.image("mask.png", make_png((64, 48), (0, 0, 0, 0)))
        submitted = await provider.submit(edit(env, mask=mask, quality="high"))
        assert submitted.state == "pending"
        assert submitted.provider_task_id
        uploads = [path for path in env.paths if path.endswith("/uploadMedia")]
        assert len(uploads) == 2  # the image, then the mask
        await env.sandbox.wait_idle()
        outcome = await provider.poll(submitted.provider_task_id)
        assert outcome.state == "succeeded"
        assert outcome.detail["status"] == "completed"
        (output,) = outcome.outputs
        image = open_image(await env.download(output.url or ""))
        assert (image.format, image.size) == ("PNG", (1024, 1536))


async def test_auto_options_are_left_out(env: Env):
    provider = adapter(env)
    # The emulator refuses "auto" for both, as Atlas does: success means they were omitted.
    submitted = await provider.submit(
        edit(env, size="auto", quality="auto", n=1, background="auto", output_format="png")
    )
    await env.sandbox.wait_idle()
    outcome = await provider.poll(submitted.provider_task_id or "")
    assert outcome.state == "succeeded"
    # size omitted: the upstream default keeps the input's size.
    assert open_image(await env.download(outcome.outputs[0].url or "")).size == (64, 48)


async def test_warmup_404_is_pending():
    async with sandbox_env(SandboxSettings(latency=0, warmup=3600)) as env:
        provider = adapter(env)
        submitted = await provider.submit(edit(env))
        await env.sandbox.wait_idle()
        outcome = await provider.poll(submitted.provider_task_id or "")
        assert (outcome.state, outcome.detail["status"]) == ("pending", "warming_up")


async def test_an_unfinished_task_is_pending(env: Env):
    env.fault("atlascloud", "stall")
    provider = adapter(env)
    submitted = await provider.submit(edit(env))
    outcome = await provider.poll(submitted.provider_task_id or "")
    assert (outcome.state, outcome.detail["status"]) == ("pending", "processing")


async def test_a_failed_task(env: Env):
    env.fault("atlascloud", "fail")
    provider = adapter(env)
    submitted = await provider.submit(edit(env))
    await env.sandbox.wait_idle()
    outcome = await provider.poll(submitted.provider_task_id or "")
    assert outcome.state == "failed"
    assert outcome.error == "Your request was rejected by the safety system (sandbox fault)"


async def test_only_one_image_is_accepted(env: Env):
    two = (env.world.image(), env.world.image("image-2.png"))
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env, images=two))
    assert not caught.value.retryable
    assert env.paths == []  # refused before any call


@pytest.mark.parametrize("fault, status", [("429", 429), ("500", 500)])
async def test_rate_limits_and_server_errors_are_retryable(env: Env, fault: str, status: int):
    env.fault("atlascloud", fault)
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env))
    # Atlas' own client: POSTs "may create billable tasks", so a 5xx is never resent.
    expected = Resend.SAFE if status == 429 else Resend.UNKNOWN
    assert (caught.value.resend, caught.value.status) == (expected, status)
    assert caught.value.retry_after is None  # Atlas sends no Retry-After


async def test_a_bad_key_is_final():
    async with sandbox_env(SandboxSettings(latency=0, api_key="the-right-key")) as env:
        with pytest.raises(ProviderError) as caught:
            await adapter(env).submit(edit(env))
    assert (caught.value.retryable, caught.value.status) == (False, 401)
    assert caught.value.message == "atlascloud: HTTP 401: Unauthorized: invalid or missing API key"


async def test_a_loopback_webhook_is_refused_by_default(env: Env):
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env, callback_url=CALLBACK))
    assert (caught.value.retryable, caught.value.status) == (False, 400)
    assert "webhook_url" in caught.value.message


async def test_wants_a_callback_only_on_https(env: Env):
    provider = adapter(env)
    assert provider.supports_callback
    assert provider.wants_callback("https://hub.example")
    assert not provider.wants_callback("http://hub.example")


@pytest.mark.parametrize("fail", [False, True])
async def test_signed_webhook_is_verified_and_read(fail: bool):
    async with sandbox_env(WEBHOOKS) as env:
        if fail:
            env.fault("atlascloud", "fail")
        provider, prediction_id, delivery = await webhook(env)
        outcome = await provider.parse_callback(delivery.headers, delivery.content, None)
        assert outcome.provider_task_id == prediction_id
        if fail:
            assert outcome.state == "failed"
            assert "rejected by the safety system" in (outcome.error or "")
        else:
            assert outcome.state == "succeeded"
            assert open_image(await env.download(outcome.outputs[0].url or "")).size == (1024, 1536)
        # A second webhook uses the cached key set.
        await provider.parse_callback(delivery.headers, delivery.content, None)
        assert env.paths.count(JWKS) == 1


async def test_forged_webhooks_are_refused():
    async with sandbox_env(WEBHOOKS) as env:
        provider, _, delivery = await webhook(env)
        headers = dict(delivery.headers)
        body = delivery.content
        other = Ed25519PrivateKey.generate().sign(
            f"{headers['x-atlascloud-webhook-timestamp']}.".encode() + body
        )
        cases = [
            (headers, body.replace(b'"OK"', b'"ERROR"')),
            (
                {
                    **headers,
                    "x-atlascloud-webhook-signature-ed25519": base64.urlsafe_b64encode(other)
                    .decode()
                    .rstrip("="),
                },
                body,
            ),
            ({**headers, "x-atlascloud-webhook-signature-ed25519": "!!not base64!!"}, body),
            (
                {
                    **headers,
                    "x-atlascloud-webhook-timestamp": str(
                        int(headers["x-atlascloud-webhook-timestamp"]) + 1
                    ),
                },
                body,
            ),
            (
                {k: v for k, v in headers.items() if k != "x-atlascloud-webhook-signature-ed25519"},
                body,
            ),
            ({k: v for k, v in headers.items() if k != "x-atlascloud-webhook-key-id"}, body),
        ]
        for case_headers, case_body in cases:
            with pytest.raises(CallbackRejected) as caught:
                await provider.parse_callback(case_headers, case_body, None)
            assert caught.value.reason == "signature"
        # The genuine delivery still verifies: the refusals above are the checks' doing.
        assert (await provider.parse_callback(headers, body, None)).state == "succeeded"


async def test_an_unknown_key_id_refetches_the_key_set_once():
    async with sandbox_env(WEBHOOKS) as env:
        provider, _, delivery = await webhook(env)
        await provider.parse_callback(delivery.headers, delivery.content, None)
        assert env.paths.count(JWKS) == 1
        unknown = {**delivery.headers, "X-AtlasCloud-Webhook-Key-Id": "rotated-away"}
        with pytest.raises(CallbackRejected) as caught:
            await provider.parse_callback(unknown, delivery.content, None)
        assert caught.value.reason == "signature"
        assert env.paths.count(JWKS) == 2


@pytest.mark.parametrize("skew", [-301.0, 301.0])
async def test_a_stale_webhook_is_refused(skew: float):
    async with sandbox_env(WEBHOOKS) as env:
        _, _, delivery = await webhook(env)
        sent_at = int(delivery.headers["X-AtlasCloud-Webhook-Timestamp"])
        late = adapter(env, clock=lambda: sent_at + skew)
        with pytest.raises(CallbackRejected) as caught:
            await late.parse_callback(delivery.headers, delivery.content, None)
        assert caught.value.reason == "signature"
        assert "timestamp" in caught.value.message


async def test_unreachable_keys_ask_the_sender_to_retry():
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="bad gateway")

    headers = {
        "X-AtlasCloud-Webhook-Timestamp": str(int(time.time())),
        "X-AtlasCloud-Webhook-Key-Id": "k1",
        "X-AtlasCloud-Webhook-Signature-Ed25519": "AAAA",
    }
    async with mock_client(handler) as client:
        with pytest.raises(CallbackRejected) as caught:
            await AtlasCloud(config("atlascloud"), client).parse_callback(headers, b"{}", None)
    assert caught.value.reason == "unavailable"


def signed(key: Ed25519PrivateKey, value: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    body = json.dumps(value).encode()
    stamp = str(int(time.time()))
    signature = base64.urlsafe_b64encode(key.sign(f"{stamp}.".encode() + body)).decode().rstrip("=")
    headers = {
        "X-AtlasCloud-Webhook-Timestamp": stamp,
        "X-AtlasCloud-Webhook-Key-Id": "k1",
        "X-AtlasCloud-Webhook-Signature-Ed25519": signature,
    }
    return headers, body


async def test_webhook_bodies_beyond_the_emulator():
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    x = (
        base64.urlsafe_b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
        .decode()
        .rstrip("=")
    )
    jwks = {
        "keys": [
            "junk",
            {"kty": "RSA", "kid": "rsa"},
            {"kty": "OKP", "crv": "Ed25519", "kid": 7, "x": x},
            {"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": x},
        ]
    }

    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == JWKS_PATH
        return httpx.Response(200, json=jwks)

    png = base64.b64encode(make_png()).decode()
    async with mock_client(handler) as client:
        provider = AtlasCloud(config("atlascloud"), client)
        ok = {
            "session_id": "s1",
            "event_type": "image.task.terminal",
            "status": "OK",
            "payload": {"status": "completed", "outputs": [png]},
        }
        outcome = await provider.parse_callback(*signed(key, ok), None)
        assert (outcome.state, outcome.provider_task_id) == ("succeeded", "s1")
        assert outcome.outputs[0].content_type == "image/png"
        assert outcome.outputs[0].data == base64.b64decode(png)
        error = {
            "session_id": "s1",
            "status": "ERROR",
            "payload": {"status": "timeout", "error": "took too long"},
        }
        outcome = await provider.parse_callback(*signed(key, error), None)
        assert (outcome.state, outcome.error) == ("failed", "took too long")
        contradictory = {
            "session_id": "s1",
            "status": "ERROR",
            "payload": {"status": "completed", "outputs": []},
            "error": "upstream",
        }
        outcome = await provider.parse_callback(*signed(key, contradictory), None)
        assert (outcome.state, outcome.error) == ("failed", "AtlasCloud returned no image")
        for bad in (
            {"status": "OK"},
            {"status": "OK", "payload": {"status": "processing"}},
            {"status": "OK", "payload": {"status": "completed", "outputs": ["%%%"]}},
        ):
            with pytest.raises(CallbackRejected) as caught:
                await provider.parse_callback(*signed(key, bad), None)
            assert caught.value.reason == "unreadable"


@pytest.mark.parametrize(
    "answer, state, expected",
    [
        (
            {
                "code": 200,
                "data": {"id": "p1", "status": "succeeded", "outputs": ["https://cdn.test/x.webp"]},
            },
            "succeeded",
            "image/webp",
        ),
        (
            {"id": "p1", "status": "completed", "outputs": [base64.b64encode(make_png()).decode()]},
            "succeeded",
            "image/png",
        ),
        (
            {
                "code": 200,
                "data": {"id": "p1", "status": "failed", "error": "nsfw", "error_code": 1039},
            },
            "failed",
            "nsfw (error_code 1039)",
        ),
        (
            {"code": 200, "data": {"id": "p1", "status": "canceled", "error": ""}},
            "failed",
            "the task canceled",
        ),
        ({"code": 200, "data": {"id": "p1", "status": "starting"}}, "pending", None),
    ],
)
async def test_poll_answers(answer: dict[str, Any], state: str, expected: str | None):
    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        return httpx.Response(200, json=answer)

    async with mock_client(handler) as client:
        outcome = await AtlasCloud(config("atlascloud"), client).poll("p1")
    assert outcome.state == state
    if state == "succeeded":
        assert outcome.outputs[0].content_type == expected
    elif state == "failed":
        assert outcome.error == expected


async def test_an_error_inside_a_200_envelope():
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 403, "msg": "quota exhausted"})

    async with mock_client(handler) as client:
        with pytest.raises(ProviderError) as caught:
            await AtlasCloud(config("atlascloud"), client).poll("p1")
    assert (caught.value.retryable, caught.value.status) == (False, 403)
    assert "quota exhausted" in caught.value.message


async def test_an_upload_without_a_url_is_an_error():
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 200, "data": {"filename": "x.png"}})

    async with mock_client(handler) as client:
        request = EditRequest("t", "p", (static_image(),))
        with pytest.raises(ProviderError) as caught:
            await AtlasCloud(config("atlascloud"), client).submit(request)
    assert "download_url" in caught.value.message


@pytest.mark.parametrize(
    "answer, expected",
    [
        ({"id": "p1", "status": "completed", "outputs": ["https://cdn.test/x.png"]}, "succeeded"),
        ({"code": 200, "data": {"id": "p1", "status": "processing"}}, "pending"),
        ({"code": 200, "data": {"status": "starting"}}, None),
    ],
)
async def test_submit_answers(answer: dict[str, Any], expected: str | None):
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/uploadMedia"):
            return httpx.Response(200, json={"data": {"download_url": "https://up.test/a.png"}})
        body = json.loads(request.content)
        assert body == {
            "model": "openai/gpt-image-1/edit",
            "prompt": "p",
            "image": "https://up.test/a.png",
        }
        return httpx.Response(200, json=answer)

    async with mock_client(handler) as client:
        provider = AtlasCloud(config("atlascloud"), client)
        request = EditRequest("t", "p", (static_image(),))
        if expected is None:
            with pytest.raises(ProviderError):
                await provider.submit(request)
        else:
            outcome = await provider.submit(request)
            assert (outcome.state, outcome.provider_task_id) == (expected, "p1")


@pytest.mark.parametrize(
    "url, wanted",
    [
        ("https://hub.example.com", True),
        ("https://203.0.113.9:8443", False),  # documentation range: not routable
        ("https://8.8.8.8", True),
        ("http://hub.example.com", False),
        ("https://localhost:8000", False),
        ("https://127.0.0.1", False),
        ("https://10.1.2.3", False),
        ("https://192.168.1.10", False),
        ("https://100.64.0.1", False),  # CGNAT
        ("https://[::1]", False),
        ("https://hub.local", False),
        ("https://hub", False),
        ("https://hub.example.com/" + "x" * 1024, False),
    ],
)
async def test_wants_a_callback_only_on_a_public_https_host(url: str, wanted: bool):
    async with mock_client(_nothing) as client:
        assert AtlasCloud(config("atlascloud"), client).wants_callback(url) is wanted


async def _nothing(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500)


@pytest.mark.parametrize("status", [400, 404])
async def test_a_missing_prediction_is_pending_only_within_the_grace(status: int):
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"code": status, "message": "not found"})

    async with mock_client(handler) as client:
        provider = AtlasCloud(config("atlascloud", not_found_grace=30.0), client)
        assert (await provider.poll("p1", age=0.0)).state == "pending"
        assert (await provider.poll("p1", age=29.0)).state == "pending"
        late = await provider.poll("p1", age=31.0)
    assert late.state == "failed"
    assert late.error_code is ErrorCode.OUTCOME_UNKNOWN
    assert "may have charged" in (late.error or "")


@pytest.mark.parametrize(
    "data",
    [
        {"outputs": ["https://cdn.test/a.png", "https://cdn.test/b.png"]},
        {"output": ["https://cdn.test/a.png", "https://cdn.test/b.png"]},
        {"outputs": "https://cdn.test/a.png"},
        {"output": "https://cdn.test/a.png"},
    ],
)
async def test_outputs_or_output_a_list_or_a_string(data: dict[str, Any]):
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"code": 200, "data": {"status": "completed", **data}})

    async with mock_client(handler) as client:
        outcome = await AtlasCloud(config("atlascloud"), client).poll("p1")
    urls = [output.url for output in outcome.outputs]
    value = next(iter(data.values()))
    assert urls == (value if isinstance(value, list) else [value])


async def test_mixed_base64_and_url_outputs_are_all_kept_in_order():
    png = base64.b64encode(make_png()).decode()

    async def handler(request: httpx.Request) -> httpx.Response:
        outputs = ["https://cdn.test/a.png", png, "https://cdn.test/c.png"]
        return httpx.Response(200, json={"data": {"status": "completed", "outputs": outputs}})

    async with mock_client(handler) as client:
        outcome = await AtlasCloud(config("atlascloud"), client).poll("p1")
    assert [output.url for output in outcome.outputs] == [
        "https://cdn.test/a.png",
        None,
        "https://cdn.test/c.png",
    ]
    assert outcome.outputs[1].data == make_png()


async def test_the_user_agent_is_configurable():
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("user-agent", ""))
        return httpx.Response(200, json={"data": {"status": "processing"}})

    async with mock_client(handler) as client:
        await AtlasCloud(config("atlascloud", user_agent="Mozilla/5.0 hub"), client).poll("p")
        await AtlasCloud(config("atlascloud"), client).poll("p")
    assert seen[0] == "Mozilla/5.0 hub"
    assert seen[1] != "Mozilla/5.0 hub"
