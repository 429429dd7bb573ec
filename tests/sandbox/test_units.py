"""Unit tests of the building blocks: images, state, settings, faults."""

import httpx
import pytest

from hub.config.env import SettingsError
from hub.sandbox.app import Sandbox
from hub.sandbox.faults import FaultKind, FaultQueue, job_faults
from hub.sandbox.images import EditSpec, ImageError, edit_images, inspect
from hub.sandbox.inputs import InputError, decode_data_url
from hub.sandbox.settings import SandboxSettings
from hub.sandbox.state import BoundedMap, FileStore, SlidingWindow

from .helpers import Harness, data_url, make_image, open_image


def test_edit_is_deterministic_and_visible():
    source = make_image((100, 80))
    first = edit_images([source], EditSpec())
    second = edit_images([source], EditSpec())
    assert first[0].data == second[0].data
    edited = open_image(first[0].data).convert("RGB")
    assert edited.getpixel((50, 40)) != (40, 90, 200)  # tinted
    assert edited.getpixel((0, 0)) != edited.getpixel((50, 40))  # framed


@pytest.mark.parametrize(
    ("spec", "size", "mode"),
    [
        (EditSpec(size="1024x1536"), (1024, 1536), "RGB"),
        (EditSpec(size="256x256", output_format="jpeg"), (256, 256), "RGB"),
        (EditSpec(background="transparent", output_format="webp"), (64, 48), "RGBA"),
        (EditSpec(background="opaque"), (64, 48), "RGB"),
    ],
)
def test_edit_sizes_and_alpha(spec: EditSpec, size: tuple[int, int], mode: str):
    out = edit_images([make_image()], spec)[0]
    image = open_image(out.data)
    assert (image.size, image.mode) == (size, mode)
    assert (out.width, out.height) == size


def test_transparent_input_keeps_alpha_on_auto():
    out = edit_images([make_image(color=(10, 20, 30, 0))], EditSpec())[0]
    assert open_image(out.data).mode == "RGBA"


def test_variants_differ():
    outputs = edit_images([make_image(), make_image((20, 20))], EditSpec(count=3))
    assert len({o.data for o in outputs}) == 3


@pytest.mark.parametrize("data", [b"", b"GIF89a....", make_image(fmt="GIF")])
def test_not_an_image(data: bytes):
    with pytest.raises(ImageError):
        edit_images([data], EditSpec())
    with pytest.raises(ImageError):
        inspect(data)


def test_inspect():
    info = inspect(make_image((12, 34), color=(1, 2, 3, 4)))
    assert (info.format, info.width, info.height, info.has_alpha) == ("PNG", 12, 34, True)


def test_data_urls():
    assert decode_data_url(data_url(b"abc")) == b"abc"
    assert decode_data_url("data:text/plain,a%20b") == b"a b"
    with pytest.raises(InputError):
        decode_data_url("data:image/png;base64,***")
    with pytest.raises(InputError):
        decode_data_url("data:image/png;base64")


def test_bounded_map_and_file_store():
    records: BoundedMap[int, int] = BoundedMap(3)
    for i in range(5):
        records.put(i, i)
    assert (records.get(0), records.get(4), len(records)) == (None, 4, 3)
    files = FileStore(max_files=10, max_bytes=10)
    first = files.put(b"123456", "text/plain", "txt")
    second = files.put(b"123456", "text/plain", ".txt")
    assert files.get(first) is None
    assert files.get(second) is not None
    assert second.endswith(".txt")
    with pytest.raises(ValueError):
        files.put(b"x" * 11, "text/plain", "")


def test_sliding_window():
    now = [0.0]
    window = SlidingWindow(2, period=60, clock=lambda: now[0])
    assert window.acquire() is None
    now[0] = 10
    assert window.acquire() is None
    assert window.acquire() == 50
    assert window.remaining() == 0
    now[0] = 61
    assert window.acquire() is None
    assert SlidingWindow(0).acquire() is None


def test_settings_from_env_and_validation():
    settings = SandboxSettings.from_env(
        {
            "HUB_SANDBOX_LATENCY": "0.5",
            "HUB_SANDBOX_ALLOW_INSECURE_WEBHOOKS": "true",
            "HUB_SANDBOX_EACHLABS_RATE_LIMIT": "5",
            "HUB_SANDBOX_API_KEY": "",
            "HUB_SANDBOX_EACHLABS_WEBHOOK_SHAPE": "legacy",
        }
    )
    assert settings.latency == 0.5
    assert settings.allow_insecure_webhooks is True
    assert settings.eachlabs_rate_limit == 5
    assert settings.api_key is None
    assert settings.eachlabs_webhook_shape == "legacy"
    assert "api_key" not in repr(SandboxSettings(api_key="secret-value"))
    with pytest.raises(ValueError):
        SandboxSettings.from_env({"HUB_SANDBOX_LATENCY": "soon"})
    with pytest.raises(ValueError):
        SandboxSettings(latency=-1)
    with pytest.raises(ValueError):
        SandboxSettings(eachlabs_webhook_shape="v3")


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("HUB_SANDBOX_LATENCY", "-1", "at least 0 (seconds, e.g. 15 or 2m)"),
        ("HUB_SANDBOX_WARMUP", "soon", "at least 0 (seconds, e.g. 15 or 2m)"),
        ("HUB_SANDBOX_EACHLABS_MAX_CONCURRENT", "-1", "a whole number, at least 0 (0 = off)"),
        ("HUB_SANDBOX_EACHLABS_AUTH", "token", "one of both, x-api-key, bearer"),
        (
            "HUB_SANDBOX_ALLOW_INSECURE_WEBHOOKS",
            "sure",
            "one of 1, 0, true, false, yes, no, on, off",
        ),
    ],
)
def test_a_bad_sandbox_variable_is_one_line_naming_it(name, value, allowed):
    with pytest.raises(SettingsError) as refused:
        SandboxSettings.from_env({name: value})
    assert str(refused.value) == f"{name}={value!r}: must be {allowed}"


def test_sandbox_settings_take_durations_and_choices_in_any_case():
    settings = SandboxSettings.from_env(
        {"HUB_SANDBOX_LATENCY": "2m", "HUB_SANDBOX_ACEDATA_OUTPUT": "URL"}
    )
    assert (settings.latency, settings.acedata_output) == (120.0, "url")
    with pytest.raises(SettingsError, match="HUB_SANDBOX_API_KEY=''"):
        SandboxSettings(api_key="")


def test_fault_queue_order_and_applicability():
    queue = FaultQueue()
    queue.add(FaultKind.LOST_CALLBACK)
    queue.add(FaultKind.FAIL, 2)
    assert queue.pending() == [{"kind": "lost_callback", "count": 1}, {"kind": "fail", "count": 2}]
    assert queue.take(job_faults(has_callback=False)) is None
    assert queue.take(job_faults(has_callback=True)) is FaultKind.LOST_CALLBACK
    assert queue.take(job_faults(has_callback=False)) is FaultKind.FAIL
    limited = FaultQueue({FaultKind.FAIL})
    with pytest.raises(ValueError):
        limited.add(FaultKind.HANG)


async def test_fault_endpoint(sb: Harness):
    url = "/eachlabs/_sandbox/faults"
    assert (await sb.client.post(url, json={"kind": "hang", "count": 2})).status_code == 201
    listed = (await sb.client.get(url)).json()
    assert listed["pending"] == [{"kind": "hang", "count": 2}]
    assert "duplicate_callback" in listed["supported"]
    for bad in ({"kind": "teapot"}, {"kind": "429", "count": 0}, {"kind": "429", "count": True}):
        assert (await sb.client.post(url, json=bad)).status_code == 400
    assert (await sb.client.post(url, content=b"nope")).status_code == 400
    assert (await sb.client.delete(url)).json()["pending"] == []


async def test_unknown_routes_use_provider_shapes(sb: Harness):
    ace = await sb.client.get("/acedata/v2/nothing")
    assert ace.json()["success"] is False
    each = await sb.client.get("/eachlabs/nothing")
    assert set(each.json()) == {"error"}
    atlas = await sb.client.get("/atlascloud/nothing")
    assert atlas.json()["code"] == 404
    missing_file = await sb.client.get("/segmind/files/nothing.png")
    assert missing_file.status_code == 404


async def test_sandbox_lifecycle_cancels_jobs_and_refuses_restart():
    sandbox = Sandbox(SandboxSettings(latency=60))
    with pytest.raises(RuntimeError):
        sandbox.runtime.client  # noqa: B018 - the property itself raises before start
    async with sandbox:
        with pytest.raises(RuntimeError):
            await sandbox.start()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=sandbox.app), base_url="http://sandbox.test"
        )
        async with client:
            response = await client.post(
                "/eachlabs/v1/prediction",
                headers={"X-API-Key": "k"},
                json={
                    "model": "openai-image-edit",
                    "input": {"prompt": "p", "image_url_1": data_url(make_image())},
                },
            )
            assert response.status_code == 200
        assert sandbox.runtime.jobs.active == 1
        sandbox.faults("segmind").add(FaultKind.FAIL)
        assert sandbox.faults("segmind").pending() == [{"kind": "fail", "count": 1}]
    assert sandbox.runtime.jobs.active == 0
    with pytest.raises(RuntimeError):
        await sandbox.start()
