import asyncio
from typing import Any

import pytest

from hub.sandbox.app import SandboxSettings

from .helpers import Harness, data_url, make_image, open_image, running

KEY = {"x-api-key": "SG_test"}
V1 = "/segmind/v1/gpt-image-1-edit"
V2 = "/segmind/v2/gpt-image-1-edit"


def request(**fields: object) -> dict[str, Any]:
    return {
        "prompt": "make it a toy",
        "image_urls": [data_url(make_image())],
        "mask": None,
        "size": "auto",
        **fields,
    }


@pytest.mark.parametrize(
    ("fmt", "content_type", "pil"),
    [("png", "image/png", "PNG"), ("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")],
)
async def test_v1_answers_raw_image_bytes(sb: Harness, fmt: str, content_type: str, pil: str):
    response = await sb.client.post(V1, headers=KEY, json=request(output_format=fmt))
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    image = open_image(response.content)
    assert (image.format, image.size) == (pil, (64, 48))
    for header in ("x-cost", "x-remaining-credits", "x-generation-time", "x-request-id"):
        assert response.headers[header]
    assert float(response.headers["x-cost"]) > 0
    # The figure reported is the one the ledger bills the job at.
    ledger = (await sb.client.get("/segmind/_sandbox/ledger")).json()["jobs"]
    job = next(j for j in ledger if j["id"] == response.headers["x-request-id"])
    assert (job["billed"], job["cost_usd"]) == (True, float(response.headers["x-cost"]))


async def test_v1_size_and_url_input(sb: Harness):
    url = sb.outbound.host("in.png", make_image())
    response = await sb.client.post(
        V1, headers=KEY, json=request(image_urls=[url], size="1536x1024", background="transparent")
    )
    image = open_image(response.content)
    assert (image.size, image.mode) == ((1536, 1024), "RGBA")


async def test_auth_is_x_api_key_only(sb: Harness):
    bearer = await sb.client.post(V1, headers={"Authorization": "Bearer SG_test"}, json=request())
    assert bearer.status_code == 401
    assert "error" in bearer.json()
    missing = await sb.client.post(V1, json=request())
    assert missing.json() == {"error": "Missing Authorization or x-api-key in header"}
    async with running(SandboxSettings(latency=0, api_key="SG_right")) as locked:
        wrong = await locked.client.post(V1, headers=KEY, json=request())
        assert wrong.status_code == 401


@pytest.mark.parametrize(
    "payload",
    [
        request(image_urls=[]),
        request(image_urls="https://images.test/a.png"),
        request(image_urls=[data_url(make_image())] * 17),
        request(prompt=None),
        request(background="auto"),
        request(size="512x512"),
        request(quality="standard"),
        request(moderation="high"),
        request(output_compression=0),
        request(image_urls=[data_url(b"not an image")]),
    ],
)
async def test_validation_errors(sb: Harness, payload: dict[str, Any]):
    response = await sb.client.post(V1, headers=KEY, json=payload)
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


async def test_405_is_html_and_406_for_wrong_content_type(sb: Harness):
    wrong_method = await sb.client.get(V1, headers=KEY)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"].startswith("text/html")
    wrong_type = await sb.client.post(V1, headers=KEY, data={"prompt": "p"})
    assert (wrong_type.status_code, wrong_type.json()) == (406, {"error": "Invalid content type"})


async def test_v2_queue_and_poll(sb: Harness):
    submitted = await sb.client.post(V2, headers=KEY, json=request(output_format="webp"))
    body = submitted.json()
    assert body["status"] == "QUEUED"
    request_id = body["request_id"]
    assert body["status_url"].endswith(f"/segmind/v2/requests/{request_id}/status")
    await sb.sandbox.wait_idle()
    status = (await sb.client.get(body["status_url"], headers=KEY)).json()
    assert (status["status"], status["request_id"]) == ("COMPLETED", request_id)
    assert "inference_time" in status["metrics"]
    result = await sb.client.get(body["response_url"], headers=KEY)
    payload = result.json()
    assert payload["status"] == "COMPLETED"
    assert {"cost", "remaining_credits", "total_time"} <= set(payload["metrics"])
    ledger = (await sb.client.get("/segmind/_sandbox/ledger")).json()["jobs"]
    job = next(j for j in ledger if j["id"] == request_id)
    assert (job["billed"], job["cost_usd"]) == (True, payload["metrics"]["cost"])
    assert open_image((await sb.client.get(payload["output"])).content).format == "WEBP"
    legacy = await sb.client.get(body["poll_url"], headers=KEY)
    assert legacy.json()["output"] == payload["output"]
    unknown = await sb.client.get("/segmind/v2/requests/nope", headers=KEY)
    assert unknown.status_code == 404


async def test_rate_limit_without_retry_after():
    async with running(SandboxSettings(latency=0, segmind_rate_limit=2)) as sb:
        for _ in range(2):
            ok = await sb.client.post(V1, headers=KEY, json=request())
            assert ok.status_code == 200
        limited = await sb.client.post(V1, headers=KEY, json=request())
        assert limited.status_code == 429
        assert "retry-after" not in limited.headers


async def test_fault_429_500(sb: Harness):
    await sb.fault("segmind", "429")
    await sb.fault("segmind", "500")
    limited = await sb.client.post(V1, headers=KEY, json=request())
    assert limited.status_code == 429
    assert "retry-after" not in limited.headers
    failed = await sb.client.post(V2, headers=KEY, json=request())
    assert failed.status_code == 500
    assert "error" in failed.json()


async def test_fault_stall(sb: Harness):
    await sb.fault("segmind", "stall", count=2)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await sb.client.post(V1, headers=KEY, json=request())
    queued = (await sb.client.post(V2, headers=KEY, json=request())).json()
    await sb.sandbox.wait_idle()
    status = await sb.client.get(queued["status_url"], headers=KEY)
    assert status.json()["status"] == "PROCESSING"


async def test_fault_fail(sb: Harness):
    await sb.fault("segmind", "fail", count=2)
    sync = await sb.client.post(V1, headers=KEY, json=request())
    assert (sync.status_code, sync.json()) == (406, {"error": "Insufficient credits"})
    queued = (await sb.client.post(V2, headers=KEY, json=request())).json()
    await sb.sandbox.wait_idle()
    result = await sb.client.get(queued["response_url"], headers=KEY)
    assert result.status_code == 422
    body = result.json()
    assert body["status"] == "FAILED"
    assert body["error"]
    assert "cost" not in body["metrics"]


@pytest.mark.parametrize(
    "kind", ["duplicate_callback", "callback_before_response", "lost_callback"]
)
async def test_callback_faults_do_not_apply(sb: Harness, kind: str):
    response = await sb.client.post("/segmind/_sandbox/faults", json={"kind": kind})
    assert response.status_code == 400


async def test_download_failure_and_pending_result(sb: Harness):
    missing = request(image_urls=["http://images.test/missing.png"])
    response = await sb.client.post(V1, headers=KEY, json=missing)
    assert response.status_code == 400
    assert "HTTP 404" in response.json()["error"]
    failed = (await sb.client.post(V2, headers=KEY, json=missing)).json()
    await sb.sandbox.wait_idle()
    result = await sb.client.get(failed["response_url"], headers=KEY)
    assert (result.status_code, result.json()["status"]) == (422, "FAILED")
    await sb.fault("segmind", "stall")
    pending = (await sb.client.post(V2, headers=KEY, json=request())).json()
    waiting = await sb.client.get(pending["response_url"], headers=KEY)
    assert (waiting.status_code, waiting.json()["status"]) == (200, "PROCESSING")
    transparent_jpeg = request(background="transparent", output_format="jpeg")
    assert (await sb.client.post(V1, headers=KEY, json=transparent_jpeg)).status_code == 400
