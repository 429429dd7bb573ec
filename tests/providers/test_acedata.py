import base64
import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from hub.providers.acedata import AceData
from hub.providers.base import CallbackRejected, EditRequest, ProviderError, Resend
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


def adapter(env: Env, **changes: Any) -> AceData:
    return AceData(env.config("acedata", **changes), env.client)


def edit(env: Env, **changes: Any) -> EditRequest:
    request = EditRequest(
        task_id="task_1",
        prompt="add a hat",
        images=(env.world.image(),),
        size="1024x1024",
        callback_url=CALLBACK,
    )
    return replace(request, **changes)


async def test_callback_mode_submit_then_callback_and_lookup(env: Env):
    provider = adapter(env)
    submitted = await provider.submit(edit(env, quality="low", output_format="png", n=1))
    assert submitted.state == "pending"
    assert submitted.provider_task_id
    assert submitted.detail["trace_id"]

    delivery = await env.callback()
    assert str(delivery.url) == CALLBACK
    outcome = await provider.parse_callback(delivery.headers, delivery.content, None)
    assert outcome.state == "succeeded"
    assert outcome.provider_task_id == submitted.provider_task_id
    (output,) = outcome.outputs
    assert output.content_type == "image/png"
    assert output.data is not None
    assert open_image(output.data).size == (1024, 1024)

    polled = await provider.poll(submitted.provider_task_id)
    assert polled.state == "succeeded"
    assert polled.outputs == outcome.outputs
    assert "duration" in polled.detail


async def test_the_multipart_request_reaches_the_emulator_as_sent(env: Env):
    provider = adapter(env)
    second = env.world.image("image-2.png", make_png((32, 32), (200, 10, 10)))
    mask = env.world.image("mask.png", make_png((64, 48), (0, 0, 0, 0)))
    request = EditRequest(
        task_id="t",
        prompt="merge",
        images=(env.world.image(), second),
        mask=mask,
        size="1536x1024",
        background="opaque",
        output_format="webp",
        callback_url=CALLBACK,
    )
    submitted = await provider.submit(request)
    await env.sandbox.wait_idle()
    lookup = await env.client.post(
        "/acedata/openai/tasks",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"action": "retrieve", "id": submitted.provider_task_id},
    )
    echo = lookup.json()["request"]
    assert echo["image"] == ["image-1.png", "image-2.png"]
    assert echo["model"] == "gpt-image-1"
    assert echo["callback_url"] == CALLBACK
    assert echo["output_format"] == "webp"
    polled = await provider.poll(submitted.provider_task_id or "")
    (output,) = polled.outputs
    assert output.content_type == "image/webp"
    assert open_image(output.data or b"").size == (1536, 1024)


async def test_sync_mode_answers_with_the_images(env: Env):
    outcome = await adapter(env).submit(edit(env, callback_url=None, size="1024x1536"))
    assert outcome.state == "succeeded"
    assert open_image(outcome.outputs[0].data or b"").size == (1024, 1536)


async def test_url_outputs_are_passed_on():
    async with sandbox_env(SandboxSettings(latency=0, acedata_output="url")) as env:
        provider = adapter(env)
        outcome = await provider.submit(edit(env, callback_url=None))
        (output,) = outcome.outputs
        assert output.data is None
        assert output.url is not None
        assert output.content_type == "image/png"
        assert open_image(await env.download(output.url)).size == (1024, 1024)


async def test_unfinished_and_unknown_tasks_are_pending(env: Env):
    provider = adapter(env)
    env.fault("acedata", "stall")
    submitted = await provider.submit(edit(env))
    polled = await provider.poll(submitted.provider_task_id or "")
    assert (polled.state, polled.detail["found"]) == ("pending", True)
    unknown = await provider.poll("no-such-task")
    assert (unknown.state, unknown.detail["found"]) == ("pending", False)


async def test_a_failed_edit_is_reported_by_callback_and_lookup(env: Env):
    provider = adapter(env)
    env.fault("acedata", "fail")
    submitted = await provider.submit(edit(env))
    delivery = await env.callback()
    outcome = await provider.parse_callback(delivery.headers, delivery.content, None)
    assert outcome.state == "failed"
    assert outcome.provider_task_id == submitted.provider_task_id
    assert outcome.error == "api_error: The image edit failed upstream (sandbox fault)"
    polled = await provider.poll(submitted.provider_task_id or "")
    assert (polled.state, polled.error) == ("failed", outcome.error)


@pytest.mark.parametrize("fault, status", [("429", 429), ("500", 500)])
async def test_rate_limits_and_server_errors_are_retryable(env: Env, fault: str, status: int):
    env.fault("acedata", fault)
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env))
    # A 429 is a refusal; a 500 is documented nowhere as unbilled: never sent again.
    assert caught.value.resend is (Resend.SAFE if status == 429 else Resend.UNKNOWN)
    assert caught.value.status == status
    assert caught.value.retry_after is None  # AceData sends no Retry-After
    assert caught.value.message.startswith(f"acedata: HTTP {status}: ")


async def test_a_bad_key_is_final_and_never_shown():
    async with sandbox_env(SandboxSettings(latency=0, api_key="the-right-key")) as env:
        with pytest.raises(ProviderError) as caught:
            await adapter(env).submit(edit(env))
        error = caught.value
        assert (error.retryable, error.status) == (False, 401)
        assert "invalid_token" in error.message
        assert KEY not in error.message
        assert "the-right-key" not in error.message


async def test_callbacks_that_cannot_be_read_are_refused(env: Env):
    provider = adapter(env)
    for body in (b"not json", b"[1, 2]", b'{"hello": "world"}'):
        with pytest.raises(CallbackRejected) as caught:
            await provider.parse_callback({}, body, None)
        assert caught.value.reason == "unreadable"
    broken = {"success": True, "task_id": "t", "data": {"data": [{"b64_json": "%%%"}]}}
    with pytest.raises(CallbackRejected) as caught:
        await provider.parse_callback({}, json.dumps(broken).encode(), None)
    assert caught.value.reason == "unreadable"


async def test_callback_shapes_from_the_docs(env: Env):
    provider = adapter(env)
    png = base64.b64encode(make_png()).decode()
    documented = {
        "success": True,
        "task_id": "6a97bf49",
        "trace_id": "9b4b1ff3",
        "data": {"created": 1721626477, "data": [{"b64_json": png}]},
    }
    outcome = await provider.parse_callback({}, json.dumps(documented).encode(), "unused")
    assert (outcome.state, outcome.provider_task_id) == ("succeeded", "6a97bf49")
    assert outcome.detail == {"trace_id": "9b4b1ff3"}
    failure = {
        "success": False,
        "task_id": "x",
        "error": {"code": "api_error", "message": "fetch failed"},
    }
    outcome = await provider.parse_callback({}, json.dumps(failure).encode(), None)
    assert (outcome.state, outcome.error) == ("failed", "api_error: fetch failed")
    empty = {"success": True, "task_id": "x", "data": {"data": []}}
    outcome = await provider.parse_callback({}, json.dumps(empty).encode(), None)
    assert outcome.state == "failed"


async def test_submit_without_a_task_id_is_an_error():
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"unexpected": True})

    async with mock_client(handler) as client:
        request = EditRequest("t", "p", (static_image(),), callback_url=CALLBACK)
        with pytest.raises(ProviderError) as caught:
            await AceData(config("acedata"), client).submit(request)
    assert not caught.value.retryable
    assert "task_id" in caught.value.message


async def test_wants_a_callback_whatever_the_url(env: Env):
    provider = adapter(env)
    assert provider.supports_callback
    assert provider.wants_callback("http://localhost:8000")
    assert provider.wants_callback("https://hub.example")


async def test_a_sync_answer_with_a_broken_image_is_an_error():
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"created": 1, "data": [{"b64_json": "bm90IGFuIGltYWdl"}]})

    async with mock_client(handler) as client:
        with pytest.raises(ProviderError) as caught:
            await AceData(config("acedata"), client).submit(
                EditRequest("t", "p", (static_image(),))
            )
    # The answer was a 200: the job ran and was billed, whatever its bytes.
    assert caught.value.resend is Resend.UNKNOWN
    assert caught.value.message.startswith("acedata: an output is not a PNG, JPEG or WEBP image")
