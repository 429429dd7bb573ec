"""The sandbox fetches and posts by the hub's outbound rules (hub.net), over real
loopback HTTP: loopback is allowed (the hub on this machine serves its blobs and takes
its callbacks there), a redirect to a private or link-local address is refused at that
hop, and a webhook to a private address is never sent. Nothing here connects anywhere
but loopback: the refused addresses are refused before any connection."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from hub.sandbox.app import SandboxSettings, create_sandbox_app
from tests.helpers import until

from .helpers import make_image
from .test_live import serve

KEY = {"Authorization": "Bearer k"}
SETTINGS = SandboxSettings(latency=0, callback_retry_delay=0, allow_insecure_webhooks=True)


def host_app(hooks: list[bytes]) -> Starlette:
    image = make_image((20, 10))

    async def picture(request: Request) -> Response:
        return Response(image, media_type="image/png")

    async def inward(request: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=302)

    async def hook(request: Request) -> Response:
        hooks.append(await request.body())
        return Response("ok")

    return Starlette(
        routes=[
            Route("/input.png", picture),
            Route("/inward.png", inward),
            Route("/hook", hook, methods=["POST"]),
        ]
    )


async def predict(http: httpx.AsyncClient, url: str, image: str, webhook: str) -> str:
    body = {
        "model": "openai-image-edit",
        "input": {"prompt": "p", "image_url_1": image},
        "webhook_url": webhook,
    }
    answer = await http.post(f"{url}/eachlabs/v1/prediction", headers=KEY, json=body)
    assert answer.status_code == 200, answer.text
    prediction: str = answer.json()["predictionID"]
    return prediction


async def status(http: httpx.AsyncClient, url: str, prediction: str) -> dict[str, object]:
    answer = await http.get(f"{url}/eachlabs/v1/prediction/{prediction}", headers=KEY)
    body: dict[str, object] = answer.json()
    return body


async def test_loopback_is_fetched_a_redirect_inward_and_a_private_webhook_are_refused():
    hooks: list[bytes] = []
    async with (
        serve(host_app(hooks)) as host,
        serve(create_sandbox_app(SETTINGS)) as url,
        httpx.AsyncClient(timeout=10) as http,
    ):
        fine = await predict(http, url, f"{host}/input.png", f"{host}/hook")
        inward = await predict(http, url, f"{host}/inward.png", f"{host}/hook")
        private = await predict(http, url, f"{host}/input.png", "http://10.1.2.3/hook")

        async def ended() -> bool:
            states = [(await status(http, url, p))["status"] for p in (fine, inward, private)]
            return all(state in ("success", "error") for state in states)

        await until(ended, timeout=10)
        assert (await status(http, url, fine))["status"] == "success"
        refused = await status(http, url, inward)
        assert refused["status"] == "error"
        output = refused["output"]
        assert isinstance(output, dict) and output["error_code"] == "INPUT_DOWNLOAD_ERROR"
        assert "private or reserved" in str(output["error_message"])
        # Two webhooks reached loopback; the one aimed at 10.1.2.3 was never sent.
        await until(lambda: len(hooks) == 2, timeout=10)
        history = await http.get(f"{url}/eachlabs/v1/webhooks/{private}", headers=KEY)
        attempts = history.json()["attempts"]
        assert attempts and all("refused" in (a["error_message"] or "") for a in attempts)
