import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hub.sandbox.app import SandboxSettings

from .helpers import Harness, data_url, make_image, open_image, running

AUTH = {"Authorization": "Bearer atlas-key"}
SUBMIT = "/atlascloud/api/v1/model/generateImage"
MODEL = "openai/gpt-image-1/edit"
INSECURE = SandboxSettings(latency=0, allow_insecure_webhooks=True)


def request(**fields: object) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "comic style", "image": data_url(make_image()), **fields}


async def submit(sb: Harness, payload: dict[str, Any] | None = None):
    return await sb.client.post(SUBMIT, headers=AUTH, json=payload or request())


async def poll(sb: Harness, prediction_id: str):
    return await sb.client.get(f"/atlascloud/api/v1/model/prediction/{prediction_id}", headers=AUTH)


async def test_submit_poll_download(sb: Harness):
    response = await submit(sb, request(size="1024x1536", quality="low"))
    assert response.status_code == 200
    envelope = response.json()
    assert envelope["code"] == 200
    assert envelope["data"]["status"] == "starting"
    prediction_id = envelope["data"]["id"]
    await sb.sandbox.wait_idle()
    data = (await poll(sb, prediction_id)).json()["data"]
    assert data["status"] == "completed"
    assert data["error"] == ""
    assert data["completed_at"].endswith("Z")
    assert "predict_time" in data["metrics"]
    image = open_image((await sb.client.get(data["outputs"][0])).content)
    assert (image.format, image.size) == ("PNG", (1024, 1536))


async def test_wrapped_input_and_base64_output(sb: Harness):
    payload = {"model": MODEL, "input": {**request(), "enable_base64_output": True}}
    prediction_id = (await submit(sb, payload)).json()["data"]["id"]
    await sb.sandbox.wait_idle()
    output = (await poll(sb, prediction_id)).json()["data"]["outputs"][0]
    assert open_image(base64.b64decode(output)).size == (64, 48)


async def test_sync_mode_answers_with_the_result(sb: Harness):
    response = await submit(sb, request(enable_sync_mode=True))
    data = response.json()["data"]
    assert data["status"] == "completed"
    assert len(data["outputs"]) == 1


async def test_warmup_404s_then_found():
    async with running(SandboxSettings(latency=0, warmup=0.3)) as sb:
        prediction_id = (await submit(sb)).json()["data"]["id"]
        early = await poll(sb, prediction_id)
        assert (early.status_code, early.json()["code"]) == (404, 404)
        async with asyncio.timeout(5):
            while (late := await poll(sb, prediction_id)).status_code == 404:
                await asyncio.sleep(0.05)
        assert late.json()["data"]["id"] == prediction_id


async def test_auth(sb: Harness):
    for headers in ({}, {"x-api-key": "atlas-key"}):
        response = await sb.client.post(SUBMIT, headers=headers, json=request())
        assert response.status_code == 401
        assert response.json()["code"] == 401
    async with running(SandboxSettings(latency=0, api_key="k1")) as locked:
        bad = await locked.client.post(
            SUBMIT, headers={"Authorization": "Bearer k2"}, json=request()
        )
        assert bad.status_code == 401


@pytest.mark.parametrize(
    "payload",
    [
        request(prompt=""),
        request(image=["https://images.test/a.png"]),
        request(image=None),
        request(size="auto"),
        request(quality="auto"),
        request(model="openai/gpt-image-1"),
        request(enable_sync_mode="yes"),
    ],
)
async def test_validation(sb: Harness, payload: dict[str, Any]):
    response = await submit(sb, payload)
    assert response.status_code == 400
    assert response.json()["code"] == 400
    assert response.json()["message"]


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",
        "https://127.0.0.1/x",
        "https://localhost/x",
        "https://10.1.2.3/x",
        "https://100.64.0.1/x",
        "https://169.254.169.254/x",
        "https://printer.local/x",
        "https://hooks.example.com/" + "a" * 1024,
    ],
)
async def test_webhook_url_rules(sb: Harness, url: str):
    response = await submit(sb, request(webhook_url=url))
    assert response.status_code == 400
    assert "webhook_url" in response.json()["message"]


async def test_public_https_webhook_is_accepted(sb: Harness):
    response = await submit(sb, request(webhook_url="https://hooks.example.com/atlas"))
    assert response.status_code == 200
    assert (await sb.outbound.next_callback()).url.host == "hooks.example.com"


def verify(jwks: dict[str, Any], hook) -> dict[str, Any]:
    key = jwks["keys"][0]
    assert hook.headers["x-atlascloud-webhook-key-id"] == key["kid"]
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(key["x"] + "=="))
    signature = hook.headers["x-atlascloud-webhook-signature-ed25519"]
    assert "=" not in signature
    timestamp = hook.headers["x-atlascloud-webhook-timestamp"]
    public.verify(
        base64.urlsafe_b64decode(signature + "=="), f"{timestamp}.".encode() + hook.content
    )
    with pytest.raises(InvalidSignature):
        public.verify(base64.urlsafe_b64decode(signature + "=="), hook.content)
    payload: dict[str, Any] = json.loads(hook.content)
    return payload


async def test_signed_webhook_verifies_against_jwks():
    async with running(INSECURE) as sb:
        jwks = (await sb.client.get("/atlascloud/api/v1/webhooks/jwks.json")).json()
        assert jwks["keys"][0]["kty"] == "OKP"
        assert jwks["keys"][0]["crv"] == "Ed25519"
        response = await submit(sb, request(webhook_url="http://127.0.0.1:9/hook"))
        prediction_id = response.json()["data"]["id"]
        hook = await sb.outbound.next_callback()
        payload = verify(jwks, hook)
        assert hook.headers["x-atlascloud-webhook-id"] == prediction_id
        assert hook.headers["x-atlascloud-webhook-event"] == "image.task.terminal"
        assert payload["session_id"] == prediction_id
        assert payload["event_type"] == "image.task.terminal"
        assert payload["status"] == "OK"
        assert payload["error"] is None
        assert payload["payload"]["status"] == "completed"
        assert payload["payload"]["outputs"]


async def test_upload_then_use_as_input(sb: Harness):
    upload = await sb.client.post(
        "/atlascloud/api/v1/model/uploadMedia",
        headers=AUTH,
        files={"file": ("photo.png", make_image((33, 44)), "image/png")},
    )
    assert upload.status_code == 200
    data = upload.json()["data"]
    assert (data["filename"], data["size"]) == ("photo.png", len(make_image((33, 44))))
    assert (await sb.client.get(data["download_url"])).content == make_image((33, 44))
    prediction_id = (await submit(sb, request(image=data["download_url"]))).json()["data"]["id"]
    await sb.sandbox.wait_idle()
    output = (await poll(sb, prediction_id)).json()["data"]["outputs"][0]
    assert open_image((await sb.client.get(output)).content).size == (33, 44)


async def test_upload_seed_shape_and_errors():
    async with running(SandboxSettings(latency=0, atlas_upload_shape="seed")) as sb:
        upload = await sb.client.post(
            "/atlascloud/api/v1/model/uploadMedia",
            headers=AUTH,
            files={"file": ("p.png", b"12345", "image/png")},
        )
        assert set(upload.json()["data"]) == {"download_url", "file_name", "content_type", "size"}
        missing = await sb.client.post(
            "/atlascloud/api/v1/model/uploadMedia", headers=AUTH, json={"file": "x"}
        )
        assert missing.status_code == 400


UPLOAD = "/atlascloud/api/v1/model/uploadMedia"


async def test_upload_keeps_bytes_and_content_type(sb: Harness):
    payload = b"\r\n--boundary-like\r\n\x00\xff--"
    upload = await sb.client.post(
        UPLOAD,
        headers=AUTH,
        data={"note": "ignored"},
        files={"file": ("dir/clip.bin", payload, "application/x-custom")},
    )
    assert upload.status_code == 200
    data = upload.json()["data"]
    assert (data["filename"], data["size"]) == ("clip.bin", len(payload))
    stored = await sb.client.get(data["download_url"])
    assert (stored.content, stored.headers["content-type"]) == (payload, "application/x-custom")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=B", b"--B\r\nno headers here"),
        (
            "multipart/form-data",
            b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--B--',
        ),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n12',
        ),
        ("multipart/form-data; boundary=B", b""),
    ],
    ids=["garbage", "no-boundary", "truncated", "empty"],
)
async def test_upload_rejects_malformed_multipart(sb: Harness, content_type: str, body: bytes):
    response = await sb.client.post(
        UPLOAD, headers={**AUTH, "Content-Type": content_type}, content=body
    )
    assert response.status_code == 400
    assert response.json() == {"code": 400, "message": response.json()["message"]}
    assert "multipart" in response.json()["message"]


@pytest.mark.parametrize(
    "form",
    [
        {"data": {"file": "not a file"}, "files": {"other": ("a.png", b"1", "image/png")}},
        {"files": {"other": ("a.png", b"123", "image/png")}},
        {"files": {"file": ("a.png", b"", "image/png")}},
    ],
    ids=["text-field", "other-field", "empty-file"],
)
async def test_upload_requires_a_file_field(sb: Harness, form: dict[str, Any]):
    response = await sb.client.post(UPLOAD, headers=AUTH, **form)
    assert response.status_code == 400
    assert response.json() == {"code": 400, "message": "file is required"}


async def test_oversized_upload_is_413(sb: Harness, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("hub.sandbox.atlascloud.MAX_IMAGE_BYTES", 1024)
    declared = await sb.client.post(
        UPLOAD, headers=AUTH, files={"file": ("a.png", b"\0" * (70 * 1024), "image/png")}
    )
    head = b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        yield b"\0" * (70 * 1024)

    # Without a Content-Length the cap is enforced while reading.
    streamed = await sb.client.post(
        UPLOAD,
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=B"},
        content=chunks(),
    )
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["code"] == 413


async def test_fault_429_has_no_retry_after_and_500(sb: Harness):
    await sb.fault("atlascloud", "429")
    await sb.fault("atlascloud", "500")
    limited = await submit(sb)
    assert (limited.status_code, limited.json()["code"]) == (429, 429)
    assert "retry-after" not in limited.headers
    failed = await submit(sb)
    assert (failed.status_code, failed.json()["code"]) == (500, 500)


async def test_fault_stall():
    async with running(INSECURE) as sb:
        await sb.fault("atlascloud", "stall", count=2)
        hook = request(webhook_url="http://127.0.0.1:9/hook")
        prediction_id = (await submit(sb, hook)).json()["data"]["id"]
        await sb.sandbox.wait_idle()
        assert (await poll(sb, prediction_id)).json()["data"]["status"] == "processing"
        assert sb.outbound.drain() == []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await submit(sb, request(enable_sync_mode=True))


async def test_fault_duplicate_and_lost_and_early_callbacks():
    async with running(INSECURE) as sb:
        hook = request(webhook_url="http://127.0.0.1:9/hook")
        await sb.fault("atlascloud", "duplicate_callback")
        await submit(sb, hook)
        first, second = await sb.outbound.next_callback(), await sb.outbound.next_callback()
        assert first.content == second.content
        assert first.headers == second.headers

        await sb.fault("atlascloud", "lost_callback")
        lost_id = (await submit(sb, hook)).json()["data"]["id"]
        await sb.sandbox.wait_idle()
        assert sb.outbound.drain() == []
        assert (await poll(sb, lost_id)).json()["data"]["status"] == "completed"

        await sb.fault("atlascloud", "callback_before_response")
        early_id = (await submit(sb, hook)).json()["data"]["id"]
        delivered = sb.outbound.drain()
        assert [json.loads(d.content)["session_id"] for d in delivered] == [early_id]


async def test_fault_fail():
    async with running(INSECURE) as sb:
        await sb.fault("atlascloud", "fail")
        response = await submit(sb, request(webhook_url="http://127.0.0.1:9/hook"))
        payload = json.loads((await sb.outbound.next_callback()).content)
        assert payload["status"] == "ERROR"
        assert payload["error"]
        assert payload["payload"]["status"] == "failed"
        data = (await poll(sb, response.json()["data"]["id"])).json()["data"]
        assert (data["status"], data["outputs"]) == ("failed", [])
        assert data["error"]


async def test_input_download_failure_fails_the_prediction(sb: Harness):
    response = await submit(sb, request(image="http://images.test/missing.png"))
    await sb.sandbox.wait_idle()
    data = (await poll(sb, response.json()["data"]["id"])).json()["data"]
    assert data["status"] == "failed"
    assert "HTTP 404" in data["error"]
