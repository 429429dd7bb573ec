"""POST /v1/images/edits driven by the official `openai` package, unchanged but for its
base URL: the hub answers as OpenAI's image edit API does, through a sandbox provider."""

from __future__ import annotations

import base64
import io

import openai
import orjson
import pytest

from tests.helpers import AUTH, KEY, make_png, open_image, png_file, receiver, until


@pytest.fixture
def sandbox_settings(sandbox_settings):
    return sandbox_settings.replace(webhook_retry_seconds=0.05)


@pytest.fixture
async def client(hub):
    async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=KEY, max_retries=0) as c:
        yield c


async def test_an_edit_answers_as_openai_does(client):
    result = await client.images.edit(
        model="gpt-image-1", image=png_file(), prompt="make it blue", size="1024x1536",
        quality="low", output_format="png",
    )  # fmt: skip
    assert result.created > 0 and len(result.data) == 1
    image = open_image(base64.b64decode(result.data[0].b64_json or ""))
    assert image.size == (1024, 1536)
    assert result.size == "1024x1536" and result.quality == "low"


async def test_several_images_a_mask_and_a_chosen_provider(client):
    result = await client.images.edit(
        image=[png_file("a.png"), png_file("b.png")],
        mask=png_file("mask.png"),
        prompt="combine them",
        extra_body={"provider": "eachlabs"},
    )
    assert len(result.data) == 1
    for item in result.data:
        assert open_image(base64.b64decode(item.b64_json or "")).format == "PNG"


async def test_errors_come_in_openais_shape(hub, client):
    with pytest.raises(openai.BadRequestError) as bad_size:
        await client.images.edit(image=png_file(), prompt="p", size="999x999")
    assert bad_size.value.status_code == 400
    assert bad_size.value.body["param"] == "size"  # type: ignore[index]
    assert bad_size.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as no_prompt:
        await client.images.edit(image=png_file(), prompt="")
    assert no_prompt.value.body["param"] == "prompt"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as not_an_image:
        await client.images.edit(image=("x.png", b"not an image", "image/png"), prompt="p")
    assert not_an_image.value.body["param"] == "image"  # type: ignore[index]
    async with openai.AsyncOpenAI(
        base_url=f"{hub.url}/v1", api_key="sk-wrong", max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError) as denied:
            await wrong.images.edit(image=png_file(), prompt="p")
    assert denied.value.body["code"] == "invalid_api_key"  # type: ignore[index]


async def test_a_failed_edit_is_an_openai_error(hub, client, http):
    faults = f"{hub.url}/sandbox/acedata/_sandbox/faults"
    assert (await http.post(faults, json={"kind": "fail"})).is_success
    with pytest.raises(openai.APIStatusError) as failed:
        await client.images.edit(image=png_file(), prompt="p")
    assert failed.value.status_code == 502
    assert failed.value.body["code"] == "provider_failed"  # type: ignore[index]


async def test_with_a_callback_url_it_answers_at_once_and_posts_acedatas_shape_later(hub, http):
    async with receiver() as inbox:
        form = {"prompt": "make it blue", "callback_url": inbox.url, "size": "1024x1024"}
        response = await http.post(
            f"{hub.url}/v1/images/edits", data=form,
            files={"image": ("in.png", make_png(), "image/png")}, headers=AUTH,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        await until(lambda: len(inbox.received) == 1, timeout=20)
    body = orjson.loads(inbox.received[0].body)
    assert body["success"] is True and body["task_id"] == task_id and body["trace_id"]
    [image] = body["data"]["data"]
    assert open_image(base64.b64decode(image["b64_json"])).size == (1024, 1024)
    # The task is an ordinary one too.
    record = (await http.get(f"{hub.url}/v1/tasks/{task_id}", headers=AUTH)).json()
    assert record["status"] == "succeeded"
    assert io.BytesIO(base64.b64decode(image["b64_json"])).read(4) == b"\x89PNG"


@pytest.mark.parametrize(("field", "value"), [("n", "²"), ("output_compression", "²")])
async def test_unicode_digits_are_a_400_naming_the_field(hub, http, field, value):
    """Was: a 500 (str.isdigit() takes "²", which int() refuses)."""
    answer = await http.post(
        f"{hub.url}/v1/images/edits",
        headers=AUTH,
        files={"image": ("in.png", make_png(), "image/png")},
        data={"prompt": "p", field: value, "provider": "segmind"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == field


@pytest.mark.parametrize("form", ["comma", "repeated"])
async def test_the_provider_field_may_name_a_route(hub, http, form):
    """Eachlabs is down for this edit (a 500 before acceptance): the edit is made by the
    next provider named, comma-separated or in the field repeated."""
    faults = f"{hub.url}/sandbox/eachlabs/_sandbox/faults"
    assert (await http.post(faults, json={"kind": "500"})).status_code == 201
    route = "eachlabs,segmind" if form == "comma" else ["eachlabs", "segmind"]
    answer = await http.post(
        f"{hub.url}/v1/images/edits",
        data={"prompt": "p", "provider": route},
        files=[("image", png_file())],
        headers=AUTH,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]) == 1
    [task] = (await http.get(f"{hub.url}/v1/tasks", headers=AUTH)).json()["tasks"]
    assert task["provider"] == "segmind"
    assert [(s["provider"], s["outcome"]) for s in task["route"]] == [
        ("eachlabs", "unavailable"),
        ("segmind", "succeeded"),
    ]
