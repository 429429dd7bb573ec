import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub.sandbox.app import SandboxSettings

from .helpers import Harness, data_url, make_image, open_image, running

AUTH = {"Authorization": "Bearer test-token"}
EDITS = "/acedata/v1/images/edits"


def files(*images: bytes, name: str = "image[]") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(name, (f"in{i}.png", data, "image/png")) for i, data in enumerate(images)]


async def submit(sb: Harness, data: dict[str, str] | None = None, images: int = 1, **kw):
    form = {"model": "gpt-image-1", "prompt": "add a hat", "size": "auto", **(data or {})}
    return await sb.client.post(
        EDITS, headers=AUTH, data=form, files=files(*[make_image()] * images), **kw
    )


def decode_b64(body: dict[str, Any]) -> bytes:
    return base64.b64decode(body["data"][0]["b64_json"])


async def test_sync_edit_returns_b64_png_of_default_size(sb: Harness):
    response = await sb.client.post(
        EDITS, headers=AUTH, data={"prompt": "add a hat"}, files=files(make_image())
    )
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["created"], int)
    image = open_image(decode_b64(body))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert response.headers["x-request-id"]


async def test_openai_path_plain_image_field_and_formats(sb: Harness):
    response = await sb.client.post(
        "/acedata/openai/images/edits",
        headers=AUTH,
        data={"prompt": "p", "size": "512x512", "output_format": "webp"},
        files=files(make_image(), name="image"),
    )
    assert response.status_code == 200
    image = open_image(decode_b64(response.json()))
    assert (image.format, image.size) == ("WEBP", (512, 512))


async def test_auto_size_keeps_input_and_jpeg(sb: Harness):
    response = await submit(sb, {"output_format": "jpeg"}, images=3)
    image = open_image(decode_b64(response.json()))
    assert (image.format, image.size) == ("JPEG", (64, 48))


async def test_gpt_models_return_one_image_whatever_n(sb: Harness):
    response = await submit(sb, {"n": "3"})
    assert len(response.json()["data"]) == 1


async def test_json_mode_with_urls(sb: Harness):
    url = sb.outbound.host("a.png", make_image((80, 60)))
    body = {"prompt": "p", "image": [url, data_url(make_image())], "size": "auto"}
    response = await sb.client.post(EDITS, headers=AUTH, json=body)
    assert response.status_code == 200
    assert open_image(decode_b64(response.json())).size == (80, 60)


async def test_json_mode_fetch_failure_is_api_error(sb: Harness):
    body = {"prompt": "p", "image": "http://images.test/missing.png"}
    response = await sb.client.post(EDITS, headers=AUTH, json=body)
    assert response.status_code == 500
    payload = response.json()
    assert payload["success"] is False
    assert payload["error"] == {"code": "api_error", "message": "fetch failed"}
    assert payload["trace_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic x"}]
)
async def test_missing_token_is_401(sb: Harness, headers: dict[str, str]):
    response = await sb.client.post(EDITS, headers=headers, data={"prompt": "p"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


async def test_configured_key_is_enforced():
    async with running(SandboxSettings(latency=0, api_key="right")) as sb:
        wrong = await submit(sb)
        assert wrong.status_code == 401
        right = await sb.client.post(
            EDITS,
            headers={"Authorization": "Bearer right"},
            data={"prompt": "p", "size": "auto"},
            files=files(make_image()),
        )
        assert right.status_code == 200


@pytest.mark.parametrize(
    ("data", "count", "message"),
    [
        ({"prompt": ""}, 1, "prompt is required"),
        ({"size": "999x999"}, 1, "size must be one of"),
        ({"quality": "ultra"}, 1, "quality must be one of"),
        ({"n": "11"}, 1, "n must be between 1 and 10"),
        ({}, 17, "at most 16 images"),
        ({}, 0, "image is required"),
        ({"background": "transparent", "output_format": "jpeg"}, 1, "transparent"),
    ],
)
async def test_validation_errors(sb: Harness, data: dict[str, str], count: int, message: str):
    response = await submit(sb, data, images=count)
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"]["code"] == "bad_request"
    assert message in payload["error"]["message"]


async def test_unknown_model_is_not_implemented(sb: Harness):
    response = await submit(sb, {"model": "midjourney"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "api_not_implemented"


async def test_not_an_image_and_bad_mask(sb: Harness):
    response = await sb.client.post(
        EDITS,
        headers=AUTH,
        data={"prompt": "p"},
        files=[("image", ("x.png", b"hello", "image/png"))],
    )
    assert response.status_code == 400
    assert "not a valid image" in response.json()["error"]["message"]
    mask = make_image((10, 10), color=(0, 0, 0, 0))
    response = await sb.client.post(
        EDITS,
        headers=AUTH,
        data={"prompt": "p"},
        files=[*files(make_image()), ("mask", ("m.png", mask, "image/png"))],
    )
    assert response.status_code == 400
    assert "same dimensions" in response.json()["error"]["message"]


async def test_mask_limits_the_edit(sb: Harness):
    mask = make_image((64, 48), color=(0, 0, 0, 255))  # fully opaque: nothing editable
    response = await submit(sb, {"size": "auto"})
    masked = await sb.client.post(
        EDITS,
        headers=AUTH,
        data={"prompt": "p", "size": "auto"},
        files=[*files(make_image()), ("mask", ("m.png", mask, "image/png"))],
    )
    assert masked.status_code == 200
    original = open_image(make_image()).convert("RGB").getpixel((32, 24))
    assert open_image(decode_b64(masked.json())).convert("RGB").getpixel((32, 24)) == original
    assert open_image(decode_b64(response.json())).convert("RGB").getpixel((32, 24)) != original


async def test_callback_mode_and_task_lookup(sb: Harness):
    response = await submit(sb, {"callback_url": "https://hooks.test/cb?token=abc"})
    assert response.status_code == 200
    task_id = response.json()["task_id"]
    callback = await sb.outbound.next_callback()
    assert str(callback.url) == "https://hooks.test/cb?token=abc"
    assert callback.headers["content-type"] == "application/json"
    body = json.loads(callback.content)
    assert body["success"] is True
    assert body["task_id"] == task_id
    assert body["trace_id"] == response.headers["x-request-id"]
    assert open_image(base64.b64decode(body["data"]["data"][0]["b64_json"])).format == "PNG"

    found = await sb.client.post(
        "/acedata/openai/tasks", headers=AUTH, json={"action": "retrieve", "id": task_id}
    )
    task = found.json()
    assert task["id"] == task_id
    assert task["type"] == "images_edits"
    assert task["response"]["success"] is True
    assert task["request"]["prompt"] == "add a hat"
    by_trace = await sb.client.post(
        "/acedata/openai/tasks",
        headers=AUTH,
        json={"action": "retrieve", "trace_id": body["trace_id"], "id": "ignored"},
    )
    assert by_trace.json()["id"] == task_id
    missing = await sb.client.post(
        "/acedata/openai/tasks", headers=AUTH, json={"action": "retrieve", "id": "nope"}
    )
    assert missing.json() == {}
    batch = await sb.client.post(
        "/acedata/openai/tasks", headers=AUTH, json={"action": "retrieve_batch", "ids": [task_id]}
    )
    assert batch.json()["count"] == 1
    assert batch.json()["items"][0]["id"] == task_id


async def test_url_output_switch_serves_the_file():
    async with running(SandboxSettings(latency=0, acedata_output="url")) as sb:
        response = await submit(sb)
        url = response.json()["data"][0]["url"]
        assert url.startswith("http://sandbox.test/acedata/files/")
        image = await sb.client.get(url)
        assert open_image(image.content).size == (64, 48)


async def test_fault_429_and_500(sb: Harness):
    await sb.fault("acedata", "429")
    await sb.fault("acedata", "500")
    first, second, third = [await submit(sb) for _ in range(3)]
    assert first.status_code == 429
    assert first.json()["error"]["code"] == "too_many_requests"
    assert second.status_code == 500
    assert second.json()["error"]["code"] == "api_error"
    assert third.status_code == 200


async def test_fault_stall_sync_never_answers(sb: Harness):
    await sb.fault("acedata", "stall")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await submit(sb)
    assert (await submit(sb)).status_code == 200


async def test_fault_stall_callback_job_never_finishes(sb: Harness):
    await sb.fault("acedata", "stall")
    task_id = (await submit(sb, {"callback_url": "https://hooks.test/cb"})).json()["task_id"]
    await sb.sandbox.wait_idle()
    assert sb.outbound.drain() == []
    task = await sb.client.post(
        "/acedata/openai/tasks", headers=AUTH, json={"action": "retrieve", "id": task_id}
    )
    assert "response" not in task.json()


async def test_callback_faults_wait_for_a_callback_request(sb: Harness):
    await sb.fault("acedata", "duplicate_callback")
    assert (await submit(sb)).status_code == 200  # no callback_url: the fault stays queued
    await submit(sb, {"callback_url": "https://hooks.test/cb"})
    first = await sb.outbound.next_callback()
    second = await sb.outbound.next_callback()
    assert first.content == second.content
    pending = await sb.client.get("/acedata/_sandbox/faults")
    assert pending.json()["pending"] == []


async def test_fault_callback_before_response(sb: Harness):
    await sb.fault("acedata", "callback_before_response")
    response = await submit(sb, {"callback_url": "https://hooks.test/cb"})
    delivered = sb.outbound.drain()
    assert len(delivered) == 1
    assert json.loads(delivered[0].content)["task_id"] == response.json()["task_id"]


async def test_fault_lost_callback(sb: Harness):
    await sb.fault("acedata", "lost_callback")
    task_id = (await submit(sb, {"callback_url": "https://hooks.test/cb"})).json()["task_id"]
    await sb.sandbox.wait_idle()
    assert sb.outbound.drain() == []
    task = await sb.client.post(
        "/acedata/openai/tasks", headers=AUTH, json={"action": "retrieve", "id": task_id}
    )
    assert task.json()["response"]["success"] is True


async def test_fault_fail(sb: Harness):
    await sb.fault("acedata", "fail", count=2)
    sync = await submit(sb)
    assert sync.status_code == 500
    assert sync.json()["success"] is False
    response = await submit(sb, {"callback_url": "https://hooks.test/cb"})
    body = json.loads((await sb.outbound.next_callback()).content)
    assert body["success"] is False
    assert body["task_id"] == response.json()["task_id"]
    assert body["error"]["code"] == "api_error"
    assert set(body) == {"success", "task_id", "trace_id", "error"}


async def test_dalle2_takes_one_square_png_and_honours_n(sb: Harness):
    square = make_image((32, 32))
    response = await sb.client.post(
        EDITS,
        headers=AUTH,
        data={"model": "dall-e-2", "prompt": "p", "n": "2", "size": "256x256"},
        files=files(square),
    )
    assert response.status_code == 200
    urls = [item["url"] for item in response.json()["data"]]
    assert len(urls) == 2
    assert open_image((await sb.client.get(urls[0])).content).size == (256, 256)
    not_square = await sb.client.post(
        EDITS, headers=AUTH, data={"model": "dall-e-2", "prompt": "p"}, files=files(make_image())
    )
    assert not_square.status_code == 400


async def test_json_mode_rejects_mask_and_bad_image(sb: Harness):
    with_mask = {"prompt": "p", "image": data_url(make_image()), "mask": "https://x.test/m.png"}
    assert (await sb.client.post(EDITS, headers=AUTH, json=with_mask)).status_code == 400
    bad = {"prompt": "p", "image": {"url": "https://x.test/a.png"}}
    assert (await sb.client.post(EDITS, headers=AUTH, json=bad)).status_code == 400
    garbage = {"prompt": "p", "image": data_url(b"not an image")}
    response = await sb.client.post(EDITS, headers=AUTH, json=garbage)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request")


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--B\r\nContent-Disposition: {disposition}\r\n"
    if filename:
        head += "Content-Type: image/png\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


MULTIPART_B = {**AUTH, "Content-Type": "multipart/form-data; boundary=B"}
COMPLETE = part("prompt", b"p") + part("image", make_image(), "a.png")


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (MULTIPART_B, b"--B\r\nno headers here"),
        ({**AUTH, "Content-Type": "multipart/form-data"}, COMPLETE + b"--B--\r\n"),
        (MULTIPART_B, b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n--B--\r\n"),
        # Cut short inside the mask: the complete parts alone would make a valid edit.
        (MULTIPART_B, COMPLETE + part("mask", make_image(color=(0, 0, 0, 0)), "m.png")[:-40]),
        (MULTIPART_B, COMPLETE + part("x", b"1") * 99 + b"--B--\r\n"),
    ],
    ids=["garbage", "no-boundary", "no-name", "truncated", "too-many-parts"],
)
async def test_malformed_multipart_is_bad_request(
    sb: Harness, headers: dict[str, str], body: bytes
):
    response = await sb.client.post(EDITS, headers=headers, content=body)
    assert response.status_code == 400
    error = response.json()
    assert (error["success"], error["error"]["code"]) == (False, "bad_request")
    assert "multipart" in error["error"]["message"]
    assert response.headers["x-request-id"] == error["trace_id"]


async def test_hand_built_multipart_is_accepted(sb: Harness):
    response = await sb.client.post(EDITS, headers=MULTIPART_B, content=COMPLETE + b"--B--\r\n")
    assert response.status_code == 200


async def test_oversized_multipart_body_is_413(sb: Harness, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("hub.sandbox.acedata.MAX_MULTIPART_BODY", 4096)
    big = make_image((600, 600), color=(1, 2, 3, 4)) + b"\0" * 8192
    declared = await sb.client.post(EDITS, headers=AUTH, data={"prompt": "p"}, files=files(big))

    async def chunks() -> AsyncIterator[bytes]:
        yield COMPLETE
        yield b"\0" * 8192

    # Without a Content-Length the cap is enforced while reading.
    streamed = await sb.client.post(EDITS, headers=MULTIPART_B, content=chunks())
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "bad_request"
    huge = await sb.client.post(
        "/acedata/openai/tasks",
        headers={**AUTH, "Content-Type": "application/json"},
        content=b" " * (9 * 1024 * 1024),
    )
    assert huge.status_code == 413


async def test_multipart_image_fields_keep_their_order_and_must_be_files(sb: Harness):
    uploads = [
        ("image[]", ("a.png", make_image(), "image/png")),
        ("image", ("b.png", make_image(), "image/png")),
        ("image[]", ("c.png", make_image(), "image/png")),
    ]
    response = await sb.client.post(
        EDITS,
        headers=AUTH,
        data={"prompt": "p", "callback_url": "https://hooks.test/cb", "user": "u"},
        files=uploads,
    )
    lookup = await sb.client.post(
        "/acedata/openai/tasks",
        headers=AUTH,
        json={"action": "retrieve", "id": response.json()["task_id"]},
    )
    echo = lookup.json()["request"]
    assert (echo["image"], echo["user"], echo["prompt"]) == (["a.png", "b.png", "c.png"], "u", "p")
    for name in ("image", "image[]", "mask"):
        as_text = await sb.client.post(
            EDITS, headers=AUTH, data={"prompt": "p", name: "x"}, files=files(make_image())
        )
        assert as_text.status_code == 400
        assert "uploaded as files" in as_text.json()["error"]["message"]


async def test_large_text_field_within_the_body_cap_is_accepted(sb: Harness):
    # Starlette's parser caps text parts at 1 MB by default; the emulator caps the body only.
    response = await submit(sb, {"user": "u" * (2 * 1024 * 1024)})
    assert response.status_code == 200


async def test_task_batch_filters(sb: Harness):
    ids = []
    for _ in range(3):
        response = await submit(sb, {"callback_url": "https://hooks.test/cb"})
        ids.append(response.json()["task_id"])
    await sb.sandbox.wait_idle()

    async def batch(**query: object) -> dict[str, Any]:
        response = await sb.client.post(
            "/acedata/openai/tasks", headers=AUTH, json={"action": "retrieve_batch", **query}
        )
        result: dict[str, Any] = response.json()
        return result

    everything = await batch()
    assert everything["count"] == 3
    assert [item["id"] for item in everything["items"]] == ids[::-1]
    assert (await batch(limit=1, offset=1))["items"][0]["id"] == ids[1]
    assert (await batch(type="images"))["count"] == 0
    assert (await batch(user_id="someone-else"))["count"] == 0
    assert (await batch(created_at_min=everything["items"][0]["created_at"] + 1))["count"] == 0
    unknown = await sb.client.post("/acedata/openai/tasks", headers=AUTH, json={"action": "x"})
    assert unknown.status_code == 400
