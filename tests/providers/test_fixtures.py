"""Each adapter against bodies copied from its provider's own documents
(``fixtures/<provider>.json``, each entry naming its source), not only against the
emulators written from the same reading: the request built has the documented shape,
and every documented answer, callback and error is read as the adapter's table says."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hub.providers.acedata import AceData
from hub.providers.atlascloud import AtlasCloud
from hub.providers.base import EditRequest, ErrorCode, ProviderError, Resend
from hub.providers.eachlabs import Eachlabs
from hub.providers.segmind import Segmind

from .helpers import KEY, config, make_png, mock_client, static_image

FIXTURES = Path(__file__).parent / "fixtures"
ELIDED = "iVBORw0KGgo..."  # what the documents print for a base64 image
PNG = make_png()
Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def fixture(provider: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{provider}.json").read_text())
    for name, entry in data.items():
        if isinstance(entry, dict):
            assert entry.get("source"), f"{provider}.{name} names no source"
    return data


def with_image(value: Any) -> Any:
    """The document's body with its elided base64 made a real PNG."""
    text = json.dumps(value).replace(ELIDED, base64.b64encode(PNG).decode())
    return json.loads(text)


def answer(entry: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        entry["status"], json=with_image(entry["body"]), headers=entry.get("headers", {})
    )


def replying(entry: dict[str, Any], seen: list[httpx.Request]) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(entry)

    return handler


# -- AceData ------------------------------------------------------------------------------

ACE = fixture("acedata")


async def test_acedata_request_has_the_documented_shape():
    documented = ACE["edits_request_async"]
    seen: list[httpx.Request] = []
    async with mock_client(replying(ACE["edits_response_async"], seen)) as client:
        request = EditRequest(
            "t",
            documented["fields"]["prompt"],
            (static_image(),),
            callback_url=documented["fields"]["callback_url"],
        )
        outcome = await AceData(config("acedata"), client).submit(request)
    (sent,) = seen
    assert (sent.method, sent.url.path) == (documented["method"], documented["path"])
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    body = sent.content
    for name, value in documented["fields"].items():
        assert f'name="{name}"\r\n\r\n{value}\r\n'.encode() in body
    for name in documented["files"]:
        assert f'name="{name}"; filename='.encode() in body
    assert (outcome.state, outcome.provider_task_id) == (
        "pending",
        ACE["edits_response_async"]["body"]["task_id"],
    )


async def test_acedata_callback_and_sync_answer_are_read():
    async with mock_client(replying(ACE["edits_response_sync"], [])) as client:
        provider = AceData(config("acedata"), client)
        callback = json.dumps(with_image(ACE["callback"]["body"])).encode()
        outcome = await provider.parse_callback({}, callback, None)
        assert outcome.state == "succeeded" and outcome.outputs[0].data == PNG
        assert outcome.provider_task_id == ACE["callback"]["body"]["task_id"]
        sync = await provider.submit(EditRequest("t", "p", (static_image(),)))
        assert sync.state == "succeeded" and sync.outputs[0].data == PNG


async def test_acedata_documented_errors_are_classified():
    async with mock_client(replying(ACE["error_500"], [])) as client:
        with pytest.raises(ProviderError) as caught:
            await AceData(config("acedata"), client).submit(
                EditRequest("t", "p", (static_image(),))
            )
    assert caught.value.resend is Resend.UNKNOWN
    assert caught.value.provider_task_id == "trace:" + ACE["error_500"]["body"]["trace_id"]
    assert "api_error fetch failed" in caught.value.message
    async with mock_client(replying(ACE["error_429"], [])) as client:
        with pytest.raises(ProviderError) as caught:
            await AceData(config("acedata"), client).submit(
                EditRequest("t", "p", (static_image(),))
            )
    assert (caught.value.resend, caught.value.code) == (Resend.SAFE, ErrorCode.RATE_LIMITED)


async def test_acedata_task_lookup():
    seen: list[httpx.Request] = []
    async with mock_client(replying(ACE["task_lookup_done"], seen)) as client:
        task_id = ACE["task_lookup_request"]["body"]["id"]
        outcome = await AceData(config("acedata"), client).poll(task_id)
    assert json.loads(seen[0].content) == ACE["task_lookup_request"]["body"]
    assert seen[0].url.path == ACE["task_lookup_request"]["path"]
    assert outcome.state == "succeeded" and outcome.detail["duration"] == 29.4
    async with mock_client(replying(ACE["task_lookup_missing"], [])) as client:
        assert (await AceData(config("acedata"), client).poll(task_id)).state == "pending"


# -- Eachlabs -----------------------------------------------------------------------------

EACH = fixture("eachlabs")


async def test_eachlabs_request_has_the_documented_shape():
    documented = EACH["prediction_request"]["body"]
    seen: list[httpx.Request] = []
    async with mock_client(replying(EACH["prediction_response"], seen)) as client:
        images = tuple(static_image(f"image-{i}.png") for i in range(1, 17))
        request = EditRequest(
            "t",
            "your prompt here",
            images,
            mask=static_image("mask.png"),
            size="auto",
            quality="auto",
            background="auto",
            n=1,
        )
        outcome = await Eachlabs(config("eachlabs"), client).submit(request)
    (sent,) = seen
    body = json.loads(sent.content)
    assert sent.url.path.rstrip("/") == EACH["prediction_request"]["path"].rstrip("/")
    assert sent.headers["authorization"] == f"Bearer {KEY}" and "x-api-key" not in sent.headers
    assert (body["model"], body["version"]) == (documented["model"], documented["version"])
    assert set(body["input"]) == set(documented["input"])
    for name in ("image_size", "background", "quality", "number_of_images"):
        assert body["input"][name] == documented["input"][name]
    assert outcome.provider_task_id == EACH["prediction_response"]["body"]["predictionID"]


@pytest.mark.parametrize(
    "name, state, words",
    [
        ("get_prediction_success", "succeeded", "https://storage.eachlabs.ai/outputs/abc123.png"),
        ("get_prediction_error", "failed", "PROVIDER_RATE_LIMIT: The provider is rate limiting"),
    ],
)
async def test_eachlabs_polls_are_read(name: str, state: str, words: str):
    async with mock_client(replying(EACH[name], [])) as client:
        outcome = await Eachlabs(config("eachlabs"), client).poll("abc123-def456")
    assert outcome.state == state
    text = outcome.outputs[0].url if state == "succeeded" else outcome.error
    assert text is not None and text.startswith(words)


@pytest.mark.parametrize(
    "name, state",
    [
        ("webhook_current_success", "succeeded"),
        ("webhook_current_failure", "failed"),
        ("webhook_legacy_success", "succeeded"),
        ("webhook_legacy_failure", "failed"),
    ],
)
async def test_eachlabs_webhooks_with_the_plain_secret_are_read(name: str, state: str):
    secret = "whsec-1"
    headers = {
        k: v.replace("{webhook_secret}", secret)
        for k, v in EACH["webhook_headers_main"]["headers"].items()
    }
    async with mock_client(replying(EACH["prediction_response"], [])) as client:
        outcome = await Eachlabs(config("eachlabs"), client).parse_callback(
            headers, json.dumps(EACH[name]["body"]).encode(), secret
        )
    assert (outcome.state, outcome.provider_task_id) == (state, "abc123-def456")
    if state == "failed":
        assert outcome.error and ("EXECUTION_TIMEOUT" in outcome.error or "Error:" in outcome.error)


@pytest.mark.parametrize(
    "name, resend, slot_full, retry_after",
    [
        ("error_429_rate", Resend.SAFE, False, 60.0),
        ("error_429_in_flight", Resend.SAFE, True, None),
        ("error_500", Resend.SAFE, False, None),
        ("error_401", Resend.NEVER, False, None),
    ],
)
async def test_eachlabs_documented_errors_are_classified(
    name: str, resend: Resend, slot_full: bool, retry_after: float | None
):
    async with mock_client(replying(EACH[name], [])) as client:
        with pytest.raises(ProviderError) as caught:
            await Eachlabs(config("eachlabs"), client).submit(
                EditRequest("t", "p", (static_image(),))
            )
    error = caught.value
    assert (error.resend, error.slot_full, error.retry_after) == (resend, slot_full, retry_after)


@pytest.mark.parametrize(
    "name, cost",
    [("get_prediction_reference", 0.05), ("get_prediction_success", 0.042)],
)
async def test_eachlabs_polled_cost_is_the_billed_figure(name: str, cost: float):
    async with mock_client(replying(EACH[name], [])) as client:
        outcome = await Eachlabs(config("eachlabs"), client).poll("abc123-def456")
    assert outcome.state == "succeeded"
    assert outcome.detail["cost_usd"] == cost == EACH[name]["body"]["metrics"]["cost"]


@pytest.mark.parametrize(
    "name, cost",
    [("webhook_legacy_success", 0.042), ("webhook_current_success", None)],
)
async def test_eachlabs_webhook_cost_where_the_body_has_one(name: str, cost: float | None):
    # The current body has no metrics: the figure is then the estimate's, not made up.
    async with mock_client(replying(EACH["prediction_response"], [])) as client:
        outcome = await Eachlabs(config("eachlabs"), client).parse_callback(
            {}, json.dumps(EACH[name]["body"]).encode(), None
        )
    assert outcome.state == "succeeded"
    assert outcome.detail.get("cost_usd") == cost


@pytest.mark.parametrize(
    "metrics",
    [
        b'{"cost": -0.05}',
        b'{"cost": "0.05"}',  # the docs give a number: text is not read
        b'{"cost": true}',
        b'{"cost": null}',
        b'{"cost": {"usd": 0.05}}',
        b'{"cost": 1000000000000000000000000000000}',
        b'"0.05"',
    ],
)
async def test_eachlabs_a_cost_that_is_no_sane_figure_is_ignored(metrics: bytes):
    body = json.loads(json.dumps(EACH["get_prediction_reference"]["body"]))
    del body["metrics"]
    raw = json.dumps(body).encode()[:-1] + b', "metrics": ' + metrics + b"}"

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"Content-Type": "application/json"})

    async with mock_client(handler) as client:
        outcome = await Eachlabs(config("eachlabs"), client).poll("abc123-def456-ghi789")
    # The job still succeeded; only its figure is dropped.
    assert outcome.state == "succeeded" and "cost_usd" not in outcome.detail


# -- AtlasCloud ---------------------------------------------------------------------------

ATLAS = fixture("atlascloud")


@pytest.mark.parametrize("upload", ["upload_response_seed", "upload_response_official"])
async def test_atlascloud_requests_have_the_documented_shape(upload: str):
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == ATLAS["upload_request"]["path"]:
            return answer(ATLAS[upload])
        return answer(ATLAS["generate_response"])

    documented = ATLAS["generate_request"]
    async with mock_client(handler) as client:
        request = EditRequest("t", documented["body"]["prompt"], (static_image(),))
        outcome = await AtlasCloud(config("atlascloud"), client).submit(request)
    uploaded, generated = seen
    assert f'name="{ATLAS["upload_request"]["file_field"]}"; filename='.encode() in uploaded.content
    assert generated.url.path == documented["path"]
    assert json.loads(generated.content) == documented["body"]
    assert (outcome.state, outcome.provider_task_id) == ("pending", "pred_abc123")


@pytest.mark.parametrize(
    "name, state",
    [
        ("generate_response_unwrapped", "pending"),
        ("prediction_completed", "succeeded"),
        ("prediction_failed", "failed"),
        ("prediction_output_string", "succeeded"),
    ],
)
async def test_atlascloud_documented_answers_are_read(name: str, state: str):
    async with mock_client(replying(ATLAS[name], [])) as client:
        outcome = await AtlasCloud(config("atlascloud"), client).poll("pred_abc123", age=1.0)
    assert outcome.state == state
    if state == "succeeded":
        assert outcome.outputs[0].url == "https://storage.atlascloud.ai/outputs/result.png"
    if state == "failed":
        assert outcome.error == "content rejected (error_code 1039)"


async def test_atlascloud_documented_webhook_is_verified_and_read():
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    jwks = ATLAS["jwks"]["body"]
    jwks["keys"][0]["x"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=jwks)

    body = json.dumps(ATLAS["webhook"]["body"]).encode()
    timestamp = str(int(time.time()))
    signature = key.sign(timestamp.encode() + b"." + body)
    headers = {
        "X-AtlasCloud-Webhook-Timestamp": timestamp,
        "X-AtlasCloud-Webhook-Key-Id": "key-1",
        "X-AtlasCloud-Webhook-Signature-Ed25519": base64.urlsafe_b64encode(signature)
        .rstrip(b"=")
        .decode(),
    }
    async with mock_client(handler) as client:
        outcome = await AtlasCloud(config("atlascloud"), client).parse_callback(headers, body, None)
    assert (outcome.state, outcome.provider_task_id) == ("succeeded", "pred_abc123")


# -- Segmind ------------------------------------------------------------------------------

SEG = fixture("segmind")


async def test_segmind_request_has_the_documented_shape():
    documented = SEG["edit_request"]
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=PNG, headers=SEG["edit_response"]["headers"])

    async with mock_client(handler) as client:
        image = static_image()
        request = EditRequest(
            "t",
            documented["body"]["prompt"],
            (image,),
            size="auto",
            quality="auto",
            background="opaque",
            output_format="png",
            output_compression=100,
        )
        outcome = await Segmind(config("segmind"), client).submit(request)
    (sent,) = seen
    body = json.loads(sent.content)
    assert sent.url.path == documented["path"]
    assert sent.headers["x-api-key"] == KEY and "authorization" not in sent.headers
    expected = {**documented["body"], "image_urls": [image.url]}
    # "moderation" keeps its documented default ("auto"): the hub has no such option.
    expected.pop("moderation")
    assert body == expected
    assert "mask" in body and body["mask"] is None
    assert outcome.state == "succeeded" and outcome.outputs[0].data == PNG
    assert outcome.detail["cost"] == "0.14"
    assert outcome.detail["cost_usd"] == 0.14


@pytest.mark.parametrize("header", ["-0.14", "0.14 USD", "NaN", "inf", "1e2", "", "9" * 40])
async def test_segmind_an_x_cost_that_is_no_sane_figure_is_ignored(header: str):
    headers = {**SEG["edit_response"]["headers"], "x-cost": header}

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=PNG, headers=headers)

    async with mock_client(handler) as client:
        outcome = await Segmind(config("segmind"), client).submit(
            EditRequest("t", "p", (static_image(),))
        )
    assert outcome.state == "succeeded" and "cost_usd" not in outcome.detail


@pytest.mark.parametrize("name", ["error_401", "error_406"])
async def test_segmind_documented_refusals_are_never(name: str):
    async with mock_client(replying(SEG[name], [])) as client:
        with pytest.raises(ProviderError) as caught:
            await Segmind(config("segmind"), client).submit(
                EditRequest("t", "p", (static_image(),))
            )
    assert caught.value.resend is Resend.NEVER
    assert SEG[name]["body"]["error"] in caught.value.message


async def test_segmind_html_405_is_read():
    entry = SEG["error_405_html"]

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(405, text=entry["html"], headers={"Content-Type": "text/html"})

    async with mock_client(handler) as client:
        with pytest.raises(ProviderError) as caught:
            await Segmind(config("segmind"), client).submit(
                EditRequest("t", "p", (static_image(),))
            )
    assert caught.value.resend is Resend.NEVER
    assert "an HTML page (405 Not Allowed)" in caught.value.message
