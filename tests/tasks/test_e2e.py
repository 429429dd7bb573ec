"""Each provider end to end through the in-process sandbox, over real HTTP: submit, watch the
task's events, read the final record, decode the output image."""

import base64
from io import BytesIO

import orjson
import pytest
from PIL import Image

from tests.helpers import AUTH, data_url, live_hub, make_png, stream

FAST = (
    ("HUB_SANDBOX_LATENCY", "0"),
    # The tampering test needs a body signature: Eachlabs' signed form, not the plain secret.
    ("HUB_SANDBOX_EACHLABS_WEBHOOK_SIGNING", "hmac"),
    ("HUB_SANDBOX_CALLBACK_RETRY_DELAY", "0.05"),
    ("HUB_ACEDATA_FIRST_POLL_AFTER", "5"),
    ("HUB_EACHLABS_FIRST_POLL_AFTER", "5"),
    ("HUB_ATLASCLOUD_FIRST_POLL_AFTER", "0.05"),
    ("HUB_ATLASCLOUD_POLL_INTERVAL", "0.05"),
)


@pytest.fixture
async def sandboxed(make_settings):
    async with live_hub(make_settings(sandbox=True, extra_env=FAST)) as hub:
        yield hub


async def run_task(http, hub, provider, **options):
    body = {
        "provider": provider,
        "input": {"prompt": "make it blue", "images": [data_url(make_png())], **options},
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


async def test_task_events_also_go_to_the_tasks_channel(sandboxed, http):
    channel = (await http.post(f"{sandboxed.url}/v1/channels", headers=AUTH)).json()
    async with stream(http, channel["stream_url"], AUTH) as watching:
        body = {
            "provider": "segmind",
            "channel_id": channel["id"],
            "input": {"prompt": "p", "images": [data_url(make_png())]},
        }
        created = (await http.post(f"{sandboxed.url}/v1/tasks", json=body, headers=AUTH)).json()
        assert created["channel_id"] == channel["id"]
        frames = await watching.events(3, timeout=30)
    assert [f.event for f in frames] == ["task.queued", "task.submitted", "task.succeeded"]
    assert all(f.json["task_id"] == created["id"] for f in frames)
    assert all(f.json["channel_id"] == channel["id"] for f in frames)
    # ?task_id= on the channel narrows to one task.
    url = f"{channel['stream_url']}?last_event_id=0&task_id={created['id']}"
    async with stream(http, url, AUTH) as replay:
        assert len(await replay.events(3)) == 3


async def test_a_tampered_eachlabs_webhook_is_rejected_and_changes_nothing(sandboxed, http):
    captured = []
    state = sandboxed.state
    engine = state.engine
    real = engine.apply_callback

    async def spy(task_id, outcome, delivery):
        captured.append(delivery)
        return await real(task_id, outcome, delivery)

    engine.apply_callback = spy
    created, frames = await run_task(http, sandboxed, "eachlabs")
    assert frames[-1].event == "task.succeeded"
    [delivery] = captured[:1]
    url = sandboxed.url + "/callbacks/" + _token_of(state, created["id"])
    headers = dict(orjson.loads(delivery.headers))
    headers.pop("content-length", None)
    headers.pop("host", None)
    tampered = delivery.body.replace(b"succeeded", b"failed!!!")
    assert tampered != delivery.body
    response = await http.post(url, content=tampered, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    unsigned = {k: v for k, v in headers.items() if not k.lower().startswith("x-webhook")}
    response = await http.post(url, content=delivery.body, headers=unsigned)
    assert response.status_code == 401
    # The genuine bytes again: a retry, acknowledged, applied once.
    response = await http.post(url, content=delivery.body, headers=headers)
    assert response.status_code == 200 and response.json()["applied"] is False
    record = (await http.get(f"{sandboxed.url}/v1/tasks/{created['id']}", headers=AUTH)).json()
    assert record["status"] == "succeeded"


def _token_of(state, task_id):
    import time

    from hub.access.tokens import CALLBACK, Claims

    return state.signer.issue(CALLBACK, Claims(None, int(time.time()) + 600, task_id=task_id))


async def test_a_forged_atlascloud_webhook_is_rejected_and_changes_nothing(sandboxed, http):
    import time

    body = {"provider": "atlascloud", "input": {"prompt": "p", "images": [data_url(make_png())]}}
    await http.post(f"{sandboxed.url}/sandbox/atlascloud/_sandbox/faults", json={"kind": "stall"})
    created = (await http.post(f"{sandboxed.url}/v1/tasks", json=body, headers=AUTH)).json()
    async with stream(http, created["stream_url"], AUTH) as sse:
        while (await sse.next(10)).event != "task.submitted":
            pass
    record = (await http.get(f"{sandboxed.url}/v1/tasks/{created['id']}", headers=AUTH)).json()
    jwks = (await http.get(f"{sandboxed.url}/sandbox/atlascloud/api/v1/webhooks/jwks.json")).json()
    payload = orjson.dumps({
        "session_id": record["provider_task_id"], "event_type": "image.task.terminal",
        "status": "OK", "created_at": int(time.time() * 1000),
        "payload": {"status": "completed", "outputs": ["https://attacker.example/x.png"]},
        "error": None,
    })  # fmt: skip
    headers = {
        "content-type": "application/json",
        "x-atlascloud-webhook-id": record["provider_task_id"],
        "x-atlascloud-webhook-event": "image.task.terminal",
        "x-atlascloud-webhook-timestamp": str(int(time.time())),
        "x-atlascloud-webhook-key-id": jwks["keys"][0]["kid"],
        "x-atlascloud-webhook-signature-ed25519": base64.urlsafe_b64encode(b"\0" * 64)
        .decode()
        .rstrip("="),
    }
    url = sandboxed.url + "/callbacks/" + _token_of(sandboxed.state, created["id"])
    response = await http.post(url, content=payload, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_signature"
    after = (await http.get(f"{sandboxed.url}/v1/tasks/{created['id']}", headers=AUTH)).json()
    assert after["status"] == "submitted" and after["outputs"] == []
