"""Each field that takes a URL the hub will use later refuses a bad one when it is given:
422 naming the field (400 with ``param`` on the OpenAI-shaped edits route), with nothing
created and nothing fetched. The rules are hub.net.urls.checked (tests/net/test_urls.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import AUTH, data_url, make_png

# Refused when given: a bad port, loopback, link-local, NAT64 of a private address.
BAD = [
    "http://hooks.example:70000/",
    "http://hooks.example:8 0/",
    "http://127.0.0.1:8080/in",
    "http://169.254.169.254/latest",
    "http://[64:ff9b::a00:1]/",
    "http://2130706433/",
]
PNG = make_png()


@pytest.fixture
def settings(make_settings):
    # Segmind configured, never reached: every request below is refused before a send.
    env = (("HUB_SEGMIND_API_KEY", "k"), ("HUB_SEGMIND_URL", "http://127.0.0.1:9"))
    return make_settings(extra_env=env)


def refused(answer: Any, field: str) -> None:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and error["message"].startswith(f"{field}: ")


async def counts(client) -> tuple[int, int, int]:
    webhooks = (await client.get("/v1/webhooks", headers=AUTH)).json()["webhooks"]
    tasks = (await client.get("/v1/tasks", headers=AUTH)).json()["tasks"]
    channels = (await client.get("/v1/channels", headers=AUTH)).json()["channels"]
    return len(webhooks), len(tasks), len(channels)


@pytest.mark.parametrize("url", BAD)
async def test_webhook_url(client, url):
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    answer = await client.post(
        "/v1/webhooks", json={"url": url, "channel_id": channel["id"]}, headers=AUTH
    )
    refused(answer, "url")
    assert await counts(client) == (0, 0, 1)


@pytest.mark.parametrize("url", BAD)
async def test_a_channels_webhook_urls(client, url):
    body = {"webhook_urls": ["https://hooks.example/ok", url]}
    refused(await client.post("/v1/channels", json=body, headers=AUTH), "webhook_urls[1]")
    assert await counts(client) == (0, 0, 0)


def task(**input_: Any) -> dict[str, Any]:
    return {"provider": "segmind", "input": {"prompt": "p", "images": [data_url(PNG)], **input_}}


@pytest.mark.parametrize("url", BAD)
async def test_a_tasks_webhook_urls(client, url):
    body = {**task(), "webhook_urls": [url]}
    refused(await client.post("/v1/tasks", json=body, headers=AUTH), "webhook_urls[0]")
    assert await counts(client) == (0, 0, 0)


@pytest.mark.parametrize("url", BAD)
async def test_a_tasks_image_urls(client, url):
    # The good first image is not fetched: every URL is checked before any is.
    body = task(images=["https://images.example/first.png", url])
    refused(await client.post("/v1/tasks", json=body, headers=AUTH), "input.images[1]")
    assert await counts(client) == (0, 0, 0)


@pytest.mark.parametrize("url", BAD)
async def test_a_tasks_mask_url(client, url):
    body = task(images=["https://images.example/first.png"], mask=url)
    refused(await client.post("/v1/tasks", json=body, headers=AUTH), "input.mask")
    assert await counts(client) == (0, 0, 0)


def form(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict[str, str]]:
    boundary = "hubboundary"
    chunks = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        chunks.append(data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), {**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize("url", BAD)
async def test_the_edits_routes_callback_url(client, url):
    body, headers = form(
        ("image", "a.png", PNG), ("prompt", None, b"p"), ("provider", None, b"segmind"),
        ("callback_url", None, url.encode()),
    )  # fmt: skip
    answer = await client.post("/v1/images/edits", content=body, headers=headers)
    # OpenAI's error shape: a 400 with the field as ``param``.
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "callback_url"
    assert await counts(client) == (0, 0, 0)


async def test_the_edits_route_takes_image_files_not_urls(client):
    """Its images and mask are multipart files: a URL there is not fetched, it is refused."""
    body, headers = form(("image", None, b"https://images.example/a.png"), ("prompt", None, b"p"))
    answer = await client.post("/v1/images/edits", content=body, headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "image"
    body, headers = form(
        ("image", "a.png", PNG), ("prompt", None, b"p"), ("provider", None, b"segmind"),
        ("mask", None, b"https://images.example/m.png"),
    )  # fmt: skip
    answer = await client.post("/v1/images/edits", content=body, headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "mask"
    assert await counts(client) == (0, 0, 0)
