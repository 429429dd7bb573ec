from dataclasses import replace
from typing import Any

import httpx
import pytest

from hub.providers.base import CallbackRejected, EditRequest, ProviderError, Resend
from hub.providers.segmind import Segmind
from hub.sandbox.app import SandboxSettings

from .helpers import KEY, Env, config, mock_client, open_image, sandbox_env, static_image


def adapter(env: Env) -> Segmind:
    return Segmind(env.config("segmind"), env.client)


def edit(env: Env, **changes: Any) -> EditRequest:
    request = EditRequest(
        task_id="task_1", prompt="add a hat", images=(env.world.image(),), size="1024x1024"
    )
    return replace(request, **changes)


async def test_the_answer_is_the_image(env: Env):
    outcome = await adapter(env).submit(edit(env, background="auto", quality="auto"))
    assert outcome.state == "succeeded"
    assert outcome.provider_task_id  # from x-request-id
    (output,) = outcome.outputs
    assert (output.content_type, output.url) == ("image/png", None)
    image = open_image(output.data or b"")
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert {"cost", "generation_time", "remaining_credits"} <= outcome.detail.keys()


async def test_format_background_mask_and_several_images(env: Env):
    second = env.world.image("image-2.png")
    mask = env.world.image("mask.png")
    request = edit(
        env,
        images=(env.world.image(), second),
        mask=mask,
        size="1536x1024",
        output_format="jpeg",
        background="opaque",
        quality="low",
    )
    (output,) = (await adapter(env).submit(request)).outputs
    assert output.content_type == "image/jpeg"
    assert open_image(output.data or b"").size == (1536, 1024)


async def test_the_fail_fault_is_a_final_error(env: Env):
    env.fault("segmind", "fail")
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env))
    assert (caught.value.retryable, caught.value.status) == (False, 406)
    assert caught.value.message == "segmind: HTTP 406: Insufficient credits"


@pytest.mark.parametrize("fault, status", [("429", 429), ("500", 500)])
async def test_rate_limits_and_server_errors_are_retryable(env: Env, fault: str, status: int):
    env.fault("segmind", fault)
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(edit(env))
    assert (caught.value.retryable, caught.value.status, caught.value.retry_after) == (
        True,
        status,
        None,
    )


async def test_a_bad_key_is_final():
    async with sandbox_env(SandboxSettings(latency=0, api_key="the-right-key")) as env:
        with pytest.raises(ProviderError) as caught:
            await adapter(env).submit(edit(env))
    assert (caught.value.retryable, caught.value.status) == (False, 401)
    assert "API key is invalid" in caught.value.message
    assert KEY not in caught.value.message


async def test_an_unreadable_input_is_final(env: Env):
    request = edit(env, images=(replace(env.world.image(), url="http://images.test/missing"),))
    with pytest.raises(ProviderError) as caught:
        await adapter(env).submit(request)
    assert (caught.value.retryable, caught.value.status) == (False, 400)
    assert "Unable to read image_urls" in caught.value.message


async def test_no_polling_and_no_callbacks(env: Env):
    provider = adapter(env)
    assert not provider.supports_callback
    assert not provider.wants_callback("https://hub.example")
    with pytest.raises(ProviderError) as caught:
        await provider.poll("anything")
    assert not caught.value.retryable
    assert "no status endpoint" in caught.value.message
    with pytest.raises(CallbackRejected):
        await provider.parse_callback({}, b"{}", None)


async def test_the_long_call_gets_the_configured_timeout_and_the_key_header():
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, content=_WEBP, headers={"Content-Type": "application/octet-stream"}
        )

    async with mock_client(handler) as client:
        provider = Segmind(config("segmind", request_timeout=240.0), client)
        outcome = await provider.submit(EditRequest("t", "p", (static_image(),)))
    (request,) = seen
    assert request.extensions["timeout"]["read"] == 240.0
    assert request.headers["x-api-key"] == KEY
    assert "authorization" not in request.headers
    assert request.url.path == "/v1/gpt-image-1-edit"
    # A generic Content-Type: the bytes tell what the image is.
    assert outcome.outputs[0].content_type == "image/webp"
    assert outcome.provider_task_id is None


async def test_a_200_that_is_not_an_image_is_an_error():
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"output": "https://images.segmind.com/x.png"})

    async with mock_client(handler) as client:
        with pytest.raises(ProviderError) as caught:
            await Segmind(config("segmind"), client).submit(
                EditRequest("t", "p", (static_image(),))
            )
    assert caught.value.resend is Resend.UNKNOWN  # a 200 is billed, whatever it holds
    assert "without an image" in caught.value.message


_WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(24)
