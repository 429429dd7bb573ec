import dataclasses
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub.sandbox.app import SandboxSettings

from .helpers import FAST, Harness, data_url, make_image, open_image, running

HMAC = dataclasses.replace(FAST, eachlabs_webhook_signing="hmac")


@pytest.fixture
async def sb() -> AsyncIterator[Harness]:
    # Most of these check the signed form; the plain default has its own test below.
    async with running(HMAC) as harness:
        yield harness


KEY = {"X-API-Key": "test-key"}
CREATE = "/eachlabs/v1/prediction/"


def body(**input_fields: object) -> dict[str, Any]:
    return {
        "model": "openai-image-edit",
        "version": "0.0.1",
        "input": {"prompt": "add a hat", "image_url_1": data_url(make_image()), **input_fields},
    }


async def create(
    sb: Harness, payload: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
):
    return await sb.client.post(CREATE, headers=headers or KEY, json=payload or body())


async def poll(sb: Harness, prediction_id: str) -> dict[str, Any]:
    response = await sb.client.get(f"/eachlabs/v1/prediction/{prediction_id}", headers=KEY)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def test_prediction_lifecycle_and_output_download(sb: Harness):
    response = await create(sb, body(image_size="1536x1024", quality="high"))
    assert response.status_code == 200
    created = response.json()
    assert created["status"] == "success"
    assert created["message"] == "Prediction created successfully"
    prediction_id = created["predictionID"]
    assert (await poll(sb, prediction_id))["status"] in ("created", "starting", "processing")
    await sb.sandbox.wait_idle()
    result = await poll(sb, prediction_id)
    assert result["status"] == "success"
    assert result["metrics"]["cost"] > 0
    ledger = (await sb.client.get("/eachlabs/_sandbox/ledger")).json()["jobs"]
    job = next(j for j in ledger if j["id"] == prediction_id)
    assert (job["billed"], job["cost_usd"]) == (True, result["metrics"]["cost"])
    assert result["urls"]["get"].endswith(f"/eachlabs/v1/prediction/{prediction_id}")
    assert result["urls"]["cancel"].endswith("/cancel")
    image = open_image((await sb.client.get(result["output"])).content)
    assert (image.format, image.size) == ("PNG", (1536, 1024))


async def test_bearer_and_unslashed_path_are_accepted(sb: Harness):
    response = await sb.client.post(
        "/eachlabs/v1/prediction", headers={"Authorization": "Bearer k"}, json=body()
    )
    assert response.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": ""}, {"Authorization": "Token k"}])
async def test_missing_key_is_401(sb: Harness, headers: dict[str, Any]):
    response = await create(sb, headers=headers or {"X-Other": "1"})
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or missing API key"}
    unknown = await sb.client.get("/eachlabs/v1/prediction/x", headers=headers or {"X": "1"})
    assert unknown.status_code == 401


async def test_auth_style_switch_and_configured_key():
    settings = SandboxSettings(latency=0, eachlabs_auth="x-api-key", api_key="sekret")
    async with running(settings) as sb:
        assert (await create(sb, headers={"Authorization": "Bearer sekret"})).status_code == 401
        assert (await create(sb, headers={"X-API-Key": "wrong"})).status_code == 401
        assert (await create(sb, headers={"X-API-Key": "sekret"})).status_code == 200


async def test_model_errors(sb: Harness):
    missing = await create(sb, {"input": {"prompt": "p"}})
    assert (missing.status_code, missing.json()) == (400, {"error": "model field is required"})
    other = await create(sb, {**body(), "model": "flux-1-1-pro"})
    assert other.status_code == 404
    unknown = await sb.client.get("/eachlabs/v1/prediction/nope", headers=KEY)
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Prediction not found"})


@pytest.mark.parametrize(
    "fields",
    [
        {"prompt": ""},
        {"image_url_1": ""},
        {"image_size": "512x512"},
        {"quality": "standard"},
        {"background": "none"},
        {"number_of_images": 11},
        {"image_url_17": "https://images.test/a.png"},
        {"image_url_2": "ftp://images.test/a.png"},
    ],
)
async def test_invalid_input(sb: Harness, fields: dict[str, Any]):
    response = await create(sb, body(**fields))
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid input for model"


async def test_several_images_from_urls(sb: Harness):
    first = sb.outbound.host("first.png", make_image((90, 30)))
    second = sb.outbound.host("second.png", make_image())
    payload = body(image_url_1=first, image_url_2=second, number_of_images=2)
    prediction_id = (await create(sb, payload)).json()["predictionID"]
    await sb.sandbox.wait_idle()
    result = await poll(sb, prediction_id)
    assert isinstance(result["output"], list)
    assert len(result["output"]) == 2
    assert open_image((await sb.client.get(result["output"][1])).content).size == (90, 30)


async def test_input_errors_end_the_prediction(sb: Harness):
    missing = body(image_url_1="http://images.test/missing.png")
    bad = body(image_url_1=data_url(b"not an image"))
    first = (await create(sb, missing)).json()["predictionID"]
    second = (await create(sb, bad)).json()["predictionID"]
    await sb.sandbox.wait_idle()
    assert (await poll(sb, first))["output"]["error_code"] == "INPUT_DOWNLOAD_ERROR"
    failed = await poll(sb, second)
    assert failed["status"] == "error"
    assert failed["output"]["error_code"] == "INPUT_VALIDATION_ERROR"


def signed(payload: dict[str, Any], secret: str = "whsec") -> dict[str, Any]:
    return {**payload, "webhook_url": "https://hooks.test/each?t=1", "webhook_secret": secret}


async def test_webhook_current_shape_and_signature(sb: Harness):
    prediction_id = (await create(sb, signed(body()))).json()["predictionID"]
    hook = await sb.outbound.next_callback()
    raw = hook.content
    timestamp = hook.headers["x-webhook-timestamp"]
    expected = hmac.new(b"whsec", f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    assert hook.headers["x-webhook-signature"] == f"sha256={expected}"
    assert hook.headers["x-webhook-secret"] == "whsec"
    payload = json.loads(raw)
    assert payload["exec_id"] == prediction_id
    assert payload["status"] == "succeeded"
    assert payload["flow_id"] is None
    assert payload["error"] == ""
    assert payload["output"]["url"] == (await poll(sb, prediction_id))["output"]


async def test_webhook_without_secret_is_unsigned(sb: Harness):
    await create(sb, {**body(), "webhook_url": "https://hooks.test/each"})
    hook = await sb.outbound.next_callback()
    assert "x-webhook-signature" not in hook.headers
    assert "x-webhook-secret" not in hook.headers


async def test_webhook_legacy_shape():
    async with running(SandboxSettings(latency=0, eachlabs_webhook_shape="legacy")) as sb:
        prediction_id = (await create(sb, signed(body()))).json()["predictionID"]
        payload = json.loads((await sb.outbound.next_callback()).content)
        assert payload["id"] == prediction_id
        assert payload["status"] == "success"
        assert isinstance(payload["output"], str)
        assert payload["input"]["prompt"] == "add a hat"
        assert "predict_time" in payload["metrics"]
        ledger = (await sb.client.get("/eachlabs/_sandbox/ledger")).json()["jobs"]
        job = next(j for j in ledger if j["id"] == prediction_id)
        assert payload["metrics"]["cost"] == job["cost_usd"] > 0


async def test_webhook_retries_identically_until_acknowledged(sb: Harness):
    sb.outbound.statuses = [500, 503, 200]
    prediction_id = (await create(sb, signed(body()))).json()["predictionID"]
    attempts = [await sb.outbound.next_callback() for _ in range(3)]
    await sb.sandbox.wait_idle()
    assert sb.outbound.drain() == []
    assert len({a.content for a in attempts}) == 1
    assert len({a.headers["x-webhook-signature"] for a in attempts}) == 1
    assert len({a.headers["x-webhook-timestamp"] for a in attempts}) == 1
    history = await sb.client.get(f"/eachlabs/v1/webhooks/{prediction_id}", headers=KEY)
    record = history.json()
    assert [a["status_code"] for a in record["attempts"]] == [500, 503, 200]
    assert [a["status"] for a in record["attempts"]] == ["FAILED", "FAILED", "SUCCESS"]
    assert "X-Webhook-Secret" not in record["headers"]


async def test_webhook_gives_up_after_three_attempts(sb: Harness):
    sb.outbound.statuses = [500, 500, 500, 500]
    await create(sb, signed(body()))
    await sb.sandbox.wait_idle()
    assert len(sb.outbound.drain()) == 3


async def test_rate_limit_sixty_a_minute():
    async with running(SandboxSettings(latency=0, eachlabs_max_concurrent=0)) as sb:
        for _ in range(60):
            assert (await create(sb)).status_code == 200
        limited = await create(sb)
        assert limited.status_code == 429
        assert limited.json() == {"error": "Rate limit exceeded. Please retry after 60 seconds."}
        assert int(limited.headers["retry-after"]) >= 1


async def test_ten_predictions_in_flight_then_a_429_without_retry_after():
    async with running(SandboxSettings(latency=60)) as sb:
        ids = [(await create(sb)).json()["predictionID"] for _ in range(10)]
        limited = await create(sb)
        assert limited.status_code == 429
        # errors.mdx: the in-flight cap's 429 has no Retry-After; a slot frees when one ends.
        assert "retry-after" not in limited.headers
        assert "in progress" in limited.json()["error"]
        # Counted per key (account): another key still has its ten.
        other = await sb.client.post(
            "/eachlabs/v1/prediction", headers={"X-API-Key": "another-key"}, json=body()
        )
        assert other.status_code == 200
        cancelled = await sb.client.post(f"/eachlabs/v1/prediction/{ids[0]}/cancel", headers=KEY)
        assert cancelled.status_code == 200
        assert (await poll(sb, ids[0]))["status"] == "cancelled"
        assert (await create(sb)).status_code == 200


async def test_fault_429_500(sb: Harness):
    await sb.fault("eachlabs", "429")
    await sb.fault("eachlabs", "500")
    limited = await create(sb)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "60"
    failed = await create(sb)
    assert (failed.status_code, failed.json()) == (500, {"error": "Failed to create prediction"})


async def test_fault_stall_job_never_finishes(sb: Harness):
    await sb.fault("eachlabs", "stall")
    prediction_id = (await create(sb, signed(body()))).json()["predictionID"]
    await sb.sandbox.wait_idle()
    assert (await poll(sb, prediction_id))["status"] == "processing"
    assert sb.outbound.drain() == []


async def test_fault_duplicate_callback(sb: Harness):
    await sb.fault("eachlabs", "duplicate_callback")
    await create(sb, signed(body()))
    first, second = await sb.outbound.next_callback(), await sb.outbound.next_callback()
    assert first.content == second.content
    assert first.headers["x-webhook-signature"] == second.headers["x-webhook-signature"]


async def test_fault_callback_before_response(sb: Harness):
    await sb.fault("eachlabs", "callback_before_response")
    response = await create(sb, signed(body()))
    delivered = sb.outbound.drain()
    assert len(delivered) == 1
    assert json.loads(delivered[0].content)["exec_id"] == response.json()["predictionID"]


async def test_fault_lost_callback(sb: Harness):
    await sb.fault("eachlabs", "lost_callback")
    prediction_id = (await create(sb, signed(body()))).json()["predictionID"]
    await sb.sandbox.wait_idle()
    assert sb.outbound.drain() == []
    assert (await poll(sb, prediction_id))["status"] == "success"


async def test_fault_fail(sb: Harness):
    await sb.fault("eachlabs", "fail")
    prediction_id = (await create(sb, signed(body()))).json()["predictionID"]
    payload = json.loads((await sb.outbound.next_callback()).content)
    assert payload["status"] == "failed"
    assert payload["output"][0]["error"]["error_code"] == "PROVIDER_REJECTED"
    result = await poll(sb, prediction_id)
    assert result["status"] == "error"
    assert result["output"]["error_code"] == "PROVIDER_REJECTED"
    assert result["logs"].startswith("Error: ")


async def test_legacy_failure_webhook_and_history_errors():
    async with running(SandboxSettings(latency=0, eachlabs_webhook_shape="legacy")) as sb:
        await sb.fault("eachlabs", "fail")
        prediction_id = (await create(sb, signed(body()))).json()["predictionID"]
        payload = json.loads((await sb.outbound.next_callback()).content)
        assert payload["id"] == prediction_id
        assert (payload["status"], payload["output"]) == ("failed", None)
        assert payload["logs"].startswith("Error: ")
        await sb.sandbox.wait_idle()
        again = await sb.client.post(f"/eachlabs/v1/prediction/{prediction_id}/cancel", headers=KEY)
        assert again.status_code == 400
        plain = (await create(sb)).json()["predictionID"]
        history = await sb.client.get(f"/eachlabs/v1/webhooks/{plain}", headers=KEY)
        assert history.status_code == 404


async def test_input_must_be_an_object(sb: Harness):
    response = await create(sb, {"model": "openai-image-edit", "input": "prompt"})
    assert response.status_code == 400
    assert response.json()["details"] == "input must be an object"


async def test_the_default_webhook_carries_the_plain_secret_only():
    # Their docs' main branch: the secret in X-Webhook-Secret, and no body signature.
    async with running() as plain:
        await create(plain, signed(body()))
        hook = await plain.outbound.next_callback()
    assert hook.headers["x-webhook-secret"] == "whsec"
    assert "x-webhook-signature" not in hook.headers
    assert "x-webhook-timestamp" not in hook.headers
