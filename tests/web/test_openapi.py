"""The OpenAPI description is true: it names every route of the app and nothing else, real
responses (successes, errors, streams) match what it says, and schemathesis, generating
requests from it, finds no server error and no answer it does not describe."""

import asyncio
import datetime
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from hub.access.tokens import BLOB, CALLBACK, WATCH, Claims
from hub.blobs import records
from hub.config.settings import Settings
from hub.web.app import create_app
from hub.web.openapi import build
from tests.helpers import AUTH, KEY, data_url, make_png

SEGMIND = (("HUB_SEGMIND_API_KEY", "k"), ("HUB_SEGMIND_URL", "http://127.0.0.1:9"))


@pytest.fixture
def settings(make_settings):
    # Segmind is configured so that a task can be accepted; its URL is never reached in time
    # to matter (the task only ever gets as far as queued/retrying here).
    return make_settings(extra_env=SEGMIND, max_callback_bytes=4096, body_timeout_seconds=1.0)


class Described:
    """The served description, and a check that a real response is one it describes."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.schema = schemathesis.openapi.from_dict(spec)
        self.templates = [
            (re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path)
            for path in spec["paths"]
        ]
        self.seen: set[tuple[str, str, int]] = set()

    def template(self, path: str) -> str:
        found = [template for pattern, template in self.templates if pattern.match(path)]
        assert len(found) == 1, (path, found)
        return found[0]

    def check(self, response: httpx.Response, content: bytes | None = None) -> None:
        """``content``: what was read of a stream, which never ends by itself."""
        request = response.request
        template = self.template(request.url.path)
        method = request.method.lower()
        responses = self.spec["paths"][template][method]["responses"]
        status = str(response.status_code)
        assert status in responses, (method, template, status, response.text)
        documented = responses[status]
        if "$ref" in documented:
            documented = self.spec["components"]["responses"][documented["$ref"].split("/")[-1]]
        if "content" not in documented:  # 204
            assert response.content == b"" and "content-type" not in response.headers
            self.seen.add((method.upper(), template, response.status_code))
            return
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in documented["content"], (template, status, media)
        # A copy without the request's body: schemathesis reads it for its report, and a
        # streamed one (multipart, a trickle) cannot be read again.
        response = httpx.Response(
            response.status_code,
            headers=response.headers,
            content=response.content if content is None else content,
            request=httpx.Request(request.method, request.url, headers=request.headers),
        )
        response.elapsed = datetime.timedelta(0)
        self.schema[template][method.upper()].validate_response(response)
        self.seen.add((method.upper(), template, response.status_code))


@pytest.fixture
async def described(client) -> Described:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    return Described(response.json())


def test_the_description_is_valid_openapi_3_1(app):
    spec = orjson.loads(orjson.dumps(build(app.state.hub.settings)))
    assert spec["openapi"].startswith("3.1")
    errors = [str(error) for error in OPENAPI_31_VALIDATOR.iter_errors(spec)]
    assert errors == []


async def test_every_route_is_described_and_nothing_else(app, described):
    routes = set()
    for route in app.routes:
        if isinstance(route, Mount):  # the sandbox's emulators, not the hub's API
            continue
        assert isinstance(route, Route)
        if not route.include_in_schema:  # pages for people (a dashboard), not the API
            continue
        routes |= {(method, route.path) for method in route.methods or () if method != "HEAD"}
    operations = {
        (method.upper(), path) for path, item in described.spec["paths"].items() for method in item
    }
    assert routes == operations
    ids = [op["operationId"] for item in described.spec["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_real_answers_are_what_the_description_says(client, state, described):
    check = described.check
    check(await client.get("/healthz"))
    check(await client.get("/openapi.json"))

    response = await client.post("/v1/channels", json={"label": "l"}, headers=AUTH)
    check(response)
    channel = response.json()
    check(await client.post("/v1/channels", headers=AUTH))  # no body at all
    check(await client.get(f"/v1/channels/{channel['id']}", headers=AUTH))
    response = await client.post(
        "/v1/callback-urls", json={"channel_id": channel["id"], "ttl_seconds": 60}, headers=AUTH
    )
    check(response)

    callback = channel["callback_url"]
    check(await client.post(callback, json={"task_id": "t-1", "status": "done"}))
    check(await client.post(callback, json={"task_id": "t-1", "status": "done"}))  # duplicate
    check(await client.post(callback, data={"task_id": "t-2"}))
    check(await client.post(callback, content=b"\xff\xfe raw"))
    check(await client.get(f"/v1/channels/{channel['id']}/tasks/t-1", headers=AUTH))
    check(await client.get(f"/v1/channels/{channel['id']}/tasks/t-9?wait=0", headers=AUTH))

    upload = await client.post(
        "/v1/uploads", files={"file": ("a.png", make_png(), "image/png")}, headers=AUTH
    )
    check(upload)
    blob = upload.json()
    check(await client.get(f"/v1/blobs/{blob['id']}", headers=AUTH))
    check(await client.get(records.public_url(state.signer, "", blob["id"], ttl=60)))
    check(await client.get(records.public_url(state.signer, "", blob["id"], ttl=-1)))  # 410
    check(await client.get("/blobs/not-a-token"))
    missing = state.signer.issue(BLOB, Claims(None, int(time.time()) + 60, blob_id="blob_x"))
    check(await client.get(f"/blobs/{missing}"))  # 404

    body = {
        "provider": "segmind",
        "channel_id": channel["id"],
        "input": {"prompt": "p", "images": [data_url(make_png()), blob["id"]], "n": 1},
    }
    response = await client.post("/v1/tasks", json=body, headers=AUTH)
    check(response)
    task = response.json()
    check(await client.get(f"/v1/tasks/{task['id']}", headers=AUTH))

    hook = {"url": "http://hooks.example/hook", "channel_id": channel["id"]}
    response = await client.post("/v1/webhooks", json=hook, headers=AUTH)
    check(response)
    webhook = response.json()
    check(await client.get("/v1/webhooks", headers=AUTH))
    check(await client.get(f"/v1/webhooks/{webhook['id']}", headers=AUTH))
    check(await client.delete(f"/v1/webhooks/{webhook['id']}", headers=AUTH))
    check(await client.delete(f"/v1/webhooks/{webhook['id']}", headers=AUTH))  # 404

    # The errors, one of each kind the description names.
    expired = state.signer.issue(CALLBACK, Claims(channel["id"], int(time.time()) - 1))
    expired_watch = state.signer.issue(WATCH, Claims(channel["id"], int(time.time()) - 1))
    for request in [
        client.get(f"/v1/channels/{channel['id']}"),  # 401
        client.get(f"/v1/channels/{channel['id']}", headers={"authorization": "Bearer no"}),
        client.get("/v1/channels/ch_" + "0" * 24, headers=AUTH),  # 404
        client.get("/v1/tasks/task_" + "0" * 24, headers=AUTH),
        client.get("/v1/tasks/task_" + "0" * 24 + "/events", headers=AUTH),
        client.get("/v1/blobs/blob_" + "0" * 24, headers=AUTH),
        client.get(f"/v1/channels/{channel['id']}/tasks/t-1?wait=x", headers=AUTH),  # 422
        client.get(f"/v1/channels/{channel['id']}/events?types=", headers=AUTH),
        client.get(f"/v1/channels/{channel['id']}/events?last_event_id=x", headers=AUTH),
        client.get(f"/v1/channels/{channel['id']}/events?token={expired_watch}"),  # 410
        client.get(f"/v1/channels/{channel['id']}/events?token=forged"),  # 401
        client.get(
            f"/v1/tasks/{task['id']}/events", headers={**AUTH, "last-event-id": "-1"}
        ),  # 422
        client.post("/v1/channels", content=b"{nope", headers=AUTH),  # 400
        client.post("/v1/channels", json={"ttl_seconds": 0}, headers=AUTH),  # 422
        client.post("/v1/channels", content=b"[" * 70_000, headers=AUTH),  # 413
        client.post("/v1/callback-urls", json={"channel_id": "ch_x"}, headers=AUTH),  # 404
        client.post("/v1/callback-urls", json={}, headers=AUTH),  # 422
        client.post("/v1/tasks", json={"provider": "dalle"}, headers=AUTH),  # 422
        client.post("/v1/tasks", content=b"\xff", headers=AUTH),  # 400
        client.post("/v1/uploads", content=b"x", headers={**AUTH, "content-type": "image/png"}),
        client.post(
            "/v1/uploads",
            content=b"--b\r\n",
            headers={**AUTH, "content-type": "multipart/form-data; boundary=b"},
        ),  # 400
        client.post("/v1/uploads", files={"other": ("a", b"x")}, headers=AUTH),  # 422
        client.post(f"/callbacks/{expired}", json={}),  # 410
        client.post(callback + "x", json={}),  # 401
        client.post(callback, content=b"x" * 5000),  # 413
        client.post(callback, content=b"x", headers={"content-length": "x1"}),  # 400
    ]:
        check(await request)
    statuses = {status for _, _, status in described.seen}
    assert {200, 201, 202, 204, 400, 401, 404, 410, 413, 415, 422} <= statuses


async def read_stream(
    http: httpx.AsyncClient, url: str, events: int, headers: dict[str, str] | None = None
) -> tuple[httpx.Response, bytes]:
    """The stream's response and its first ``events`` events (it never ends by itself)."""
    async with http.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        content = b""
        async with asyncio.timeout(10):
            async for chunk in response.aiter_bytes():
                content += chunk
                if content.count(b"\ndata: ") >= events:
                    break
        return response, content


async def test_real_streams_are_what_the_description_says(live, http):
    """Over a real server: in-process (ASGITransport) a response is whole or nothing."""
    described = Described((await http.get(f"{live.url}/openapi.json")).json())
    created = await http.post(f"{live.url}/v1/channels", headers=AUTH)
    channel = created.json()
    await http.post(channel["callback_url"], json={"task_id": "t-1"})
    await http.post(channel["callback_url"], content=b"\xff raw")
    body = {
        "provider": "segmind",
        "channel_id": channel["id"],
        "input": {"prompt": "p", "images": [data_url(make_png())]},
    }
    task = (await http.post(f"{live.url}/v1/tasks", json=body, headers=AUTH)).json()
    check = described.check
    check(*await read_stream(http, channel["stream_url"] + "?last_event_id=0", 3, AUTH))
    watch = channel["watch_url"] + "&last_event_id=0&types=task.queued"
    check(*await read_stream(http, watch, 1))
    check(*await read_stream(http, task["stream_url"], 1, AUTH))
    assert {status for _, _, status in described.seen} == {200}


async def test_a_slow_body_answer_is_described(client, described):
    """408: the body did not arrive in time (the real trickle is in test_streams)."""

    async def trickle() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.sleep(3)
        yield b"}"

    described.check(await client.post("/v1/channels", content=trickle(), headers=AUTH))
    assert described.seen == {("POST", "/v1/channels", 408)}


async def test_a_rate_limited_answer_is_described(make_settings, described):
    app = create_app(make_settings(rate_limit_per_key=1))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
            responses = [await c.post("/v1/channels", headers=AUTH) for _ in range(3)]
    assert responses[-1].status_code == 429
    for response in responses:
        described.check(response)


# Schemathesis, in-process, from the description the app serves. Streams never end by
# themselves, so they are left out of generation; tests/behaviour/test_hostile_input.py calls them
# with every kind of bad input, and the test above reads real ones.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    # Sends the same request without the key, and with a wrong one, after any 2xx.
    ignored_auth,
]


def described_schema(max_examples: int, key: str | None) -> Any:
    """Schemathesis' view of the description the hub serves with ``LIMITS``; loaded at import
    (its operations become test ids), so built from the same code rather than fetched."""
    config: dict[str, Any] = {
        "generation": {"max-examples": max_examples, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    }
    if key is not None:
        config["auth"] = {"openapi": {"bearerAuth": {"bearer": key}}}
    spec = build(Settings(public_url="http://hub.test", **LIMITS))
    schema = schemathesis.openapi.from_dict(spec, config=SchemathesisConfig.from_dict(config))
    schema.app = CURRENT_APP
    return schema.exclude(path_regex=r"/events$")


class CurrentApp:
    """The ASGI app the schemas loaded at import send to: each test points it at its own hub
    (schemathesis sends a check's extra requests, such as ignored_auth's, to the schema's app)."""

    app: Starlette | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


CURRENT_APP = CurrentApp()


LIMITS: dict[str, Any] = {"max_wait_seconds": 1, "body_timeout_seconds": 5.0}
keyed = described_schema(50, KEY)
keyless = described_schema(10, None)


@pytest.fixture
def hub_app(make_settings) -> Iterator[Starlette]:
    # No provider is configured: a generated task request that got as far as fetching an
    # image URL would reach out to the network, so every one is refused before that.
    app = create_app(make_settings(**LIMITS))
    assert build(app.state.hub.settings) == keyed.raw_schema
    CURRENT_APP.app = app
    try:
        yield app
    finally:
        # Schemathesis started its lifespan on first use, on its own event loop thread.
        shutdown_lifespans()
        CURRENT_APP.app = None


# The app is shared by a test's examples on purpose: they are requests to one running hub.
SHARED_APP = hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@keyed.parametrize()
@SHARED_APP
def test_schemathesis_with_the_key(case, hub_app):
    case.call_and_validate(checks=CHECKS)


@keyless.parametrize()
@SHARED_APP
def test_schemathesis_without_a_key(case, hub_app):
    case.call_and_validate(checks=CHECKS)
