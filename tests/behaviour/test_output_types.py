"""A provider's output is kept only if its bytes are PNG, JPEG or WebP, typed as sniffed:
never as the Content-Type its sender claims. Was: an ``image/svg+xml`` output holding a
script was stored as such, and ran in the hub's origin when opened from the dashboard.

A stub AtlasCloud on loopback answers the submit as completed, with its output at a URL
(served as SVG) or inline as base64; the task fails as having returned no image, and no
blob but the input image is kept."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.helpers import AUTH, data_url, live_hub, make_png, query_store, until

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>document.title = 'ran in the hub origin';</script></svg>"
)


@contextlib.asynccontextmanager
async def atlas_stub(inline: bool) -> AsyncIterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def upload(request: Request) -> Response:
        return JSONResponse({"code": 200, "data": {"download_url": f"{base}/in.png"}})

    async def generate(request: Request) -> Response:
        output = base64.b64encode(SVG).decode() if inline else f"{base}/out.svg"
        data = {"id": "pred_1", "status": "completed", "outputs": [output]}
        return JSONResponse({"code": 200, "data": data})

    async def svg(request: Request) -> Response:
        return Response(SVG, media_type="image/svg+xml")

    app = Starlette(
        routes=[
            Route("/api/v1/model/uploadMedia", upload, methods=["POST"]),
            Route("/api/v1/model/generateImage", generate, methods=["POST"]),
            Route("/out.svg", svg),
        ]
    )
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started or task.done(), timeout=10)
        yield base
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.mark.parametrize("inline", [False, True], ids=["url", "base64"])
async def test_an_svg_output_is_refused_never_stored(make_settings, http, inline):
    async with atlas_stub(inline) as base:
        env = (("HUB_ATLASCLOUD_URL", base), ("HUB_ATLASCLOUD_API_KEY", "k"))
        settings = make_settings(allow_loopback_urls=True, extra_env=env)
        async with live_hub(settings) as hub:
            body = {
                "provider": "atlascloud",
                "input": {"prompt": "p", "images": [data_url(make_png())]},
            }
            answer = await http.post(f"{hub.url}/v1/tasks", json=body, headers=AUTH)
            assert answer.status_code == 202, answer.text
            url = f"{hub.url}/v1/tasks/{answer.json()['id']}"

            async def ended() -> bool:
                return (await http.get(url, headers=AUTH)).json()["status"] != "queued"

            await until(ended, timeout=20)
            task = (await http.get(url, headers=AUTH)).json()
            assert task["status"] == "failed", task
            assert task["outputs"] == []
            assert "image" in str(task["error"]), task  # "returned no image", or which
            row = await query_store(
                hub.state.store,
                "SELECT count(*) FROM blobs WHERE content_type NOT IN"
                " ('image/png', 'image/jpeg', 'image/webp')",
            )
            assert row[0] == 0


def test_bytes_are_typed_as_sniffed_and_no_image_is_held(make_settings):
    from typing import Any, cast

    from hub.providers.base import Output
    from hub.tasks.io import TaskIO

    none = cast(Any, None)
    io = TaskIO(make_settings(), none, none, none)
    task = cast(Any, type("T", (), {"id": "task_1", "owner": "o"})())
    held = io.hold(task, (Output(data=make_png(), content_type="image/svg+xml"),))
    [blob] = held.blobs
    assert blob.content_type == "image/png" and held.entries[0]["content_type"] == "image/png"
    refused = io.hold(task, (Output(data=SVG, content_type="image/svg+xml"),))
    assert refused.entries == [] and refused.blobs == []
