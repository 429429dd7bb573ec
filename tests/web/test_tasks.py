"""Task creation input, uploads and blobs, in-process: every bad input a 422 naming the field,
every other key's object a 404."""

import base64
from io import BytesIO

import pytest
from PIL import Image

from tests.helpers import AUTH, OTHER_AUTH, data_url, make_png


@pytest.fixture
def settings(make_settings):
    # Segmind configured with a key: a real provider as far as validation goes. Its URL is
    # never reached: every request below is refused before anything is sent.
    env = (
        ("HUB_SEGMIND_API_KEY", "k"),
        ("HUB_SEGMIND_URL", "http://127.0.0.1:9"),
        ("HUB_ATLASCLOUD_API_KEY", "k"),
    )
    return make_settings(extra_env=env, max_image_bytes=200_000, max_upload_bytes=200_000)


def task(provider="segmind", **input_):
    body = {"prompt": "edit", "images": [data_url(make_png())]}
    body.update(input_)
    return {"provider": provider, "input": body}


async def post_task(client, body, headers=AUTH):
    return await client.post("/v1/tasks", json=body, headers=headers)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # One fault a body: where there are several, the first met in the body is named.
        ({"input": task()["input"]}, "provider"),
        ({"provider": "dalle", "input": {}}, "provider"),
        ({"provider": "acedata", "input": task()["input"]}, "provider"),  # not configured
        ({"provider": "segmind"}, "input"),
        ({"provider": "segmind", "input": [1]}, "input"),
        ({"provider": "segmind", "input": task()["input"], "extra": 1}, "extra"),
        (task(prompt=""), "input.prompt"),
        (task(prompt=None), "input.prompt"),
        (task(prompt="x" * 32_001), "input.prompt"),
        (task(images=[]), "input.images"),
        (task(images=[data_url(make_png())] * 17), "input.images"),
        (task(images="one"), "input.images"),
        (task("atlascloud", images=[data_url(make_png())] * 2), "input.images"),
        (task(size="999x999"), "input.size"),
        (task(quality="ultra"), "input.quality"),
        (task(background="plaid"), "input.background"),
        (task(output_format="gif"), "input.output_format"),
        (task(n=0), "input.n"),
        (task(n=11), "input.n"),
        (task(seed=3), "input.seed"),
        (task(images=[42]), "input.images[0]"),
        (task(images=["ftp://example.com/a.png"]), "input.images[0]"),
        (task(images=["data:image/png;base64,!!!"]), "input.images[0]"),
        (task(images=["data:text/plain,hello"]), "input.images[0]"),
        (task(images=[data_url(b"not an image at all")]), "input.images[0]"),
        (
            task(images=[data_url(b"\x89PNG\r\n\x1a\n" + b"0" * 300_000)]),
            "input.images[0]",
        ),
        (task(images=["blob_" + "0" * 24]), "input.images[0]"),
        (task(images=[data_url(make_png()), "http://127.0.0.1/a.png"]), "input.images[1]"),
        (task(images=["http://localhost:8080/a.png"]), "input.images[0]"),
        (task(images=["http://10.1.2.3/a.png"]), "input.images[0]"),
        (task(images=["http://169.254.169.254/latest/meta-data"]), "input.images[0]"),
        (task(images=["http://[::1]/a.png"]), "input.images[0]"),
        (task(images=["http://user:pw@example.com/a.png"]), "input.images[0]"),
        (task(mask="nope"), "input.mask"),
        ({**task(), "channel_id": "ch_" + "0" * 24}, "channel_id"),
    ],
)
async def test_bad_task_input_is_422_naming_the_field(client, body, field):
    response = await post_task(client, body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"].startswith(field + ":")


async def test_gif_is_refused_and_the_reason_named(client):
    out = BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    url = "data:image/gif;base64," + base64.b64encode(out.getvalue()).decode()
    response = await post_task(client, task(images=[url]))
    assert response.status_code == 422
    assert "GIF" in response.json()["error"]["message"]


async def test_tasks_need_a_key(client):
    assert (await post_task(client, task(), headers={})).status_code == 401
    assert (await client.get("/v1/tasks/task_" + "0" * 24)).status_code == 401


async def test_a_valid_task_is_accepted_and_another_key_cannot_see_it(client):
    response = await post_task(client, task(size="1024x1024", quality="low", n=1))
    assert response.status_code == 202
    created = response.json()
    assert created["status"] == "queued" and created["id"].startswith("task_")
    mine = await client.get(f"/v1/tasks/{created['id']}", headers=AUTH)
    assert mine.status_code == 200 and mine.json()["provider"] == "segmind"
    for url in (f"/v1/tasks/{created['id']}", f"/v1/tasks/{created['id']}/events"):
        theirs = await client.get(url, headers=OTHER_AUTH)
        assert theirs.status_code == 404
    assert (await client.get("/v1/tasks/task_../../x", headers=AUTH)).status_code == 404


async def upload(client, data, headers=AUTH, name="file", filename="a.png"):
    return await client.post(
        "/v1/uploads", files={name: (filename, data, "image/png")}, headers=headers
    )


async def test_upload_then_read_back_and_use_in_a_task(client):
    image = make_png((32, 32))
    response = await upload(client, image)
    assert response.status_code == 201
    blob = response.json()
    assert blob["content_type"] == "image/png" and blob["size"] == len(image)
    assert blob["url"] == f"http://hub.test/v1/blobs/{blob['id']}"
    read = await client.get(f"/v1/blobs/{blob['id']}", headers=AUTH)
    assert read.content == image and read.headers["content-type"] == "image/png"
    assert read.headers["x-content-type-options"] == "nosniff"
    assert (await client.get(f"/v1/blobs/{blob['id']}", headers=OTHER_AUTH)).status_code == 404
    assert (await client.get(f"/v1/blobs/{blob['id']}")).status_code == 401
    # Another key cannot use it as an input either.
    refused = await post_task(client, task(images=[blob["id"]]), headers=OTHER_AUTH)
    assert refused.status_code == 422
    accepted = await post_task(client, task(images=[blob["id"]], quality="low"))
    assert accepted.status_code == 202
    # The task shows what it was asked: the prompt, its images as the hub holds them.
    shown = (await client.get(f"/v1/tasks/{accepted.json()['id']}", headers=AUTH)).json()
    assert shown["input"] == {"prompt": "edit", "images": [blob["url"]], "quality": "low"}
    image_read = await client.get(shown["input"]["images"][0].removeprefix("http://hub.test"),
                                  headers=AUTH)  # fmt: skip
    assert image_read.content == image


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": b"plain text"}, 422),
        ({"data": make_png(), "name": "image"}, 422),
        ({"data": b"\x89PNG" + b"0" * 300_000}, 413),
    ],
)
async def test_bad_uploads(client, kwargs, status):
    response = await upload(client, **kwargs)
    assert response.status_code == status, response.text


async def test_a_truncated_upload_is_400_and_leaves_no_file_open(client):
    # Cut inside the file part: the closing delimiter never comes.
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + make_png()
    )
    headers = {**AUTH, "content-type": "multipart/form-data; boundary=xyz"}
    response = await client.post("/v1/uploads", content=body, headers=headers)
    assert response.status_code == 400
    assert "not terminated" in response.json()["error"]["message"]


async def test_upload_must_be_multipart(client):
    response = await client.post(
        "/v1/uploads", content=make_png(), headers={**AUTH, "content-type": "image/png"}
    )
    assert response.status_code == 415
    garbage = {**AUTH, "content-type": "multipart/form-data; boundary=xyz"}
    response = await client.post("/v1/uploads", content=b"--nope\r\n\r\n", headers=garbage)
    assert response.status_code in (400, 422)


async def test_public_blob_urls_are_signed_and_expire(client, state):
    from hub.blobs import records

    blob = (await upload(client, make_png())).json()
    url = records.public_url(state.signer, "http://hub.test", blob["id"], ttl=60)
    assert (await client.get(url)).content == make_png()
    expired = records.public_url(state.signer, "http://hub.test", blob["id"], ttl=-1)
    assert (await client.get(expired)).status_code == 410
    assert (await client.get(url[:-4] + "abcd")).status_code == 401
