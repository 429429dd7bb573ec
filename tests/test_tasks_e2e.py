"""Each provider end to end through the in-process sandbox, over real HTTP: submit, watch the
task's events, read the final record, decode the output image."""

import base64
from io import BytesIO

import pytest
from PIL import Image

from tests.helpers import AUTH, live_hub, stream

FAST = (
    ("HUB_SANDBOX_LATENCY", "0"),
    ("HUB_SANDBOX_CALLBACK_RETRY_DELAY", "0.05"),
    ("HUB_ACEDATA_FIRST_POLL_AFTER", "5"),
    ("HUB_EACHLABS_FIRST_POLL_AFTER", "5"),
    ("HUB_ATLASCLOUD_FIRST_POLL_AFTER", "0.05"),
    ("HUB_ATLASCLOUD_POLL_INTERVAL", "0.05"),
)


def png(width: int = 64, height: int = 48, color=(200, 30, 30)) -> bytes:
    out = BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture
async def sandboxed(make_settings):
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as hub:
        yield hub


async def run_task(http, hub, provider, **options):
    body = {
        "provider": provider,
        "input": {"prompt": "make it blue", "images": [data_url(png())], **options},
    }
    response = await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["status"] == "queued" and created["provider"] == provider
    async with stream(http, created["stream_url"], AUTH) as sse:
        frames = []
        while True:
            frame = await sse.next(30)
            if frame.data:
                frames.append(frame)
            if frame.event and frame.event not in ("task.queued", "task.submitted"):
                break
        with pytest.raises(EOFError):  # the stream closes after the terminal event
            await sse.next(5)
    return created, frames


@pytest.mark.parametrize("provider", ["acedata", "eachlabs", "atlascloud", "segmind"])
async def test_each_provider_end_to_end(sandboxed, http, provider):
    size = "1024x1536" if provider != "atlascloud" else "1536x1024"
    created, frames = await run_task(http, sandboxed, provider, size=size, output_format="png")
    assert [f.event for f in frames] == ["task.queued", "task.submitted", "task.succeeded"]
    ids = [int(f.id) for f in frames]
    assert ids == sorted(ids)
    done = frames[-1].json
    assert done["task_id"] == created["id"] and done["status"] == "succeeded"
    assert done["provider_task_id"]
    [output] = done["outputs"]
    assert output["content_type"] == "image/png"

    record = (await http.get(f"{sandboxed.url}/v1/tasks/{created['id']}", headers=AUTH)).json()
    assert record["status"] == "succeeded" and record["outputs"] == done["outputs"]
    assert record["attempts"] == 1 and record["error"] is None

    image = await http.get(output["url"], headers=AUTH)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    decoded = Image.open(BytesIO(image.content))
    assert decoded.format == "PNG"
    assert f"{decoded.width}x{decoded.height}" == size
