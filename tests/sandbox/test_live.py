"""The sandbox over real loopback HTTP: its own lifespan, its own outbound client.

Two uvicorn servers run as tasks on 127.0.0.1 with ephemeral ports: the standalone
sandbox app (``create_sandbox_app``) and a small receiver that hosts an input image and
records the callbacks it is sent.
"""

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.sandbox.app import SandboxSettings, create_sandbox_app

from .helpers import make_image, open_image

SETTINGS = SandboxSettings(latency=0.05, allow_insecure_webhooks=True, callback_retry_delay=0)


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Receiver:
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[str, dict[str, str], bytes]] = asyncio.Queue()
        self.image = make_image((40, 30))
        self.app = Starlette(
            routes=[
                Route("/input.png", self.input, methods=["GET"]),
                Route("/hooks/{name}", self.hook, methods=["POST"]),
            ]
        )

    async def input(self, request: Request) -> Response:
        return Response(self.image, media_type="image/png")

    async def hook(self, request: Request) -> Response:
        await self.received.put(
            (request.path_params["name"], dict(request.headers), await request.body())
        )
        return Response("ok")

    async def next(self) -> tuple[str, dict[str, str], bytes]:
        async with asyncio.timeout(10):
            return await self.received.get()


@pytest.fixture
async def live() -> AsyncIterator[tuple[httpx.AsyncClient, Receiver, str]]:
    receiver = Receiver()
    sandbox = create_sandbox_app(SETTINGS)
    async with (
        serve(receiver.app) as receiver_url,
        serve(sandbox) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client, receiver, receiver_url


async def test_acedata_callback_over_http(live):
    client, receiver, base = live
    response = await client.post(
        "/acedata/v1/images/edits",
        headers={"Authorization": "Bearer t"},
        json={
            "prompt": "p",
            "image": f"{base}/input.png",
            "size": "auto",
            "callback_url": f"{base}/hooks/ace",
        },
    )
    task_id = response.json()["task_id"]
    name, _, raw = await receiver.next()
    body = json.loads(raw)
    assert (name, body["task_id"], body["success"]) == ("ace", task_id, True)
    image = open_image(base64.b64decode(body["data"]["data"][0]["b64_json"]))
    assert image.size == (40, 30)


async def test_atlas_webhook_and_output_over_http(live):
    client, receiver, base = live
    response = await client.post(
        "/atlascloud/api/v1/model/generateImage",
        headers={"Authorization": "Bearer t"},
        json={
            "model": "openai/gpt-image-1/edit",
            "prompt": "p",
            "image": f"{base}/input.png",
            "size": "1024x1024",
            "webhook_url": f"{base}/hooks/atlas",
        },
    )
    prediction_id = response.json()["data"]["id"]
    _, headers, raw = await receiver.next()
    jwk = (await client.get("/atlascloud/api/v1/webhooks/jwks.json")).json()["keys"][0]
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="))
    signature = base64.urlsafe_b64decode(headers["x-atlascloud-webhook-signature-ed25519"] + "==")
    public.verify(signature, headers["x-atlascloud-webhook-timestamp"].encode() + b"." + raw)
    payload = json.loads(raw)
    assert payload["session_id"] == prediction_id
    output = await client.get(payload["payload"]["outputs"][0])
    assert open_image(output.content).size == (1024, 1024)


async def test_segmind_stall_ends_when_the_client_gives_up(live):
    client, _, base = live
    await client.post("/segmind/_sandbox/faults", json={"kind": "stall"})
    body = {"prompt": "p", "image_urls": [f"{base}/input.png"]}
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            "/segmind/v1/gpt-image-1-edit", headers={"x-api-key": "k"}, json=body, timeout=0.5
        )
    answered = await client.post(
        "/segmind/v1/gpt-image-1-edit", headers={"x-api-key": "k"}, json=body
    )
    assert answered.headers["content-type"] == "image/png"
