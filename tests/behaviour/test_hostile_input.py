"""Hostile input on every route: malformed and mistyped JSON, huge fields, NUL bytes, invalid
UTF-8 (bodies, query strings, headers), bad multipart, oversize bodies, path tricks in ids,
garbage Last-Event-IDs, forged and mangled tokens. Whatever comes in, the answer is never a
5xx: it is the documented status, as JSON, and every error is the one error shape.

Requests go to the ASGI app as a server would hand them over (raw bytes in headers and query
strings, a percent-decoded path), since an HTTP client refuses to send most of this. A body
trickled too slowly (408) is tested over a real socket in test_streams.py.
"""

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
import pytest_asyncio
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from hub.access.tokens import BLOB, CALLBACK, WATCH, Claims, Signer
from hub.config.env import Secret
from hub.config.settings import Settings
from hub.providers.base import BACKGROUNDS, OUTPUT_FORMATS, QUALITIES, SIZES
from hub.web.app import create_app
from hub.web.openapi import build
from tests.helpers import AUTH, KEY, OTHER_AUTH, OTHER_KEY, data_url, make_image, make_png

MAX_CALLBACK = 64 * 1024
MAX_UPLOAD = 200_000
SEGMIND = (("HUB_SEGMIND_API_KEY", "k"), ("HUB_SEGMIND_URL", "http://127.0.0.1:9"))
BEARER = f"Bearer {KEY}".encode()
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Hostile:
    method: str
    # As sent on the wire: ASCII, percent-encoded, with <placeholders> for real objects.
    target: str
    status: int
    body: bytes | tuple[bytes, ...] = b""  # a tuple is sent in chunks, with no length
    headers: Headers = ()
    auth: bool = True


def case(
    id: str,
    method: str,
    target: str,
    status: int,
    body: bytes | tuple[bytes, ...] = b"",
    headers: Headers = (),
    auth: bool = True,
) -> Any:
    return pytest.param(Hostile(method, target, status, body, headers, auth), id=id)


# One helper per route, so that the table below reads one case a line.
def get(id: str, target: str, status: int, headers: Headers = (), auth: bool = True) -> Any:
    return case(id, "GET", target, status, b"", headers, auth)


def public(id: str, method: str, target: str, status: int) -> Any:
    """A route without a key: a token in the path is the credential."""
    return case(id, method, target, status, auth=False)


def callback(id: str, status: int, body: bytes | tuple[bytes, ...], *headers: Any) -> Any:
    """A delivery to a channel's genuine callback URL."""
    return case(f"callback-{id}", "POST", "/callbacks/<callback>", status, body, headers, False)


def key(id: str, target: str, status: int, value: bytes) -> Any:
    return case(f"key-{id}", "GET", target, status, b"", ((b"authorization", value),), False)


def post(path: str, prefix: str) -> Any:
    def make(id: str, status: int, body: bytes | tuple[bytes, ...] = b"", *headers: Any) -> Any:
        return case(f"{prefix}-{id}", "POST", path, status, body, headers)

    return make


channels = post("/v1/channels", "channels")
callback_urls = post("/v1/callback-urls", "callback-urls")
tasks = post("/v1/tasks", "tasks")
upload = post("/v1/uploads", "upload")
webhooks = post("/v1/webhooks", "webhooks")
edits = post("/v1/images/edits", "edits")


def js(value: Any) -> bytes:
    return orjson.dumps(value)


def url_for(channel: Any = "<channel>", **more: Any) -> bytes:
    return js({"channel_id": channel, **more})


def hook(url: Any = "http://hooks.example/hook", **more: Any) -> bytes:
    return js({"url": url, "channel_id": "<channel>", **more})


def multipart(*parts: tuple[str, bytes | None, bytes], boundary: bytes = b"BB") -> bytes:
    """A well-formed multipart body of (name, filename, data) parts."""
    out = b""
    for name, filename, data in parts:
        disposition = b'form-data; name="' + name.encode() + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        out += b"--" + boundary + b"\r\nContent-Disposition: " + disposition
        out += b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def content_type(value: bytes) -> tuple[bytes, bytes]:
    return (b"content-type", value)


def length(value: bytes) -> tuple[bytes, bytes]:
    return (b"content-length", value)


FORM = content_type(b"multipart/form-data; boundary=BB")
JSON = content_type(b"application/json")
OTHER = (b"authorization", OTHER_AUTH["authorization"].encode())
PNG = make_png((8, 8))
GIF = make_image((8, 8), "GIF")
INPUT: dict[str, Any] = {"prompt": "p", "images": [data_url(PNG)]}
TASK: dict[str, Any] = {"provider": "segmind", "input": INPUT}


def task_with(**input_: Any) -> bytes:
    return js({**TASK, "input": {**INPUT, **input_}})


def task_and(**fields: Any) -> bytes:
    return js({**TASK, **fields})


def image(source: Any) -> bytes:
    return task_with(images=[source])


def file(data: bytes, name: str = "file", filename: bytes | None = b"a.png") -> bytes:
    return multipart((name, filename, data))


def edit_form(
    *more: tuple[str, bytes | None, bytes], image: bytes = PNG, prompt: bytes = b"p"
) -> bytes:
    """An image edit request: one image, a prompt, and ``more`` parts."""
    return multipart(("image", b"a.png", image), ("prompt", None, prompt), *more)


LONG = "a" * 10_000
ZEROS = "0" * 24
# Garbage Last-Event-IDs, for the header (raw bytes) and the query (percent-encoded).
BAD_EVENT_IDS = {
    "negative": b"-1",
    "huge": b"9" * 20,
    "beyond-int64": b"9223372036854775808",
    "non-numeric": b"abc",
    "float": b"5.0",
    "exponent": b"1e3",
    "hex": b"0x10",
    "plus": b"+5",
    "superscript": "\u00b3".encode("latin-1"),
    "arabic-digit": "\u0663".encode(),
    "invalid-utf8": b"\xff\xfe",
    "10kb-digits": b"9" * 10_240,
    "10kb-text": b"x" * 10_240,
}


def stream_cases(route: str, target: str) -> Iterator[Any]:
    for name, value in BAD_EVENT_IDS.items():
        header = ((b"last-event-id", value),)
        yield get(f"{route}-last-event-id-header-{name}", target, 422, header)
        query = "".join(f"%{byte:02X}" for byte in value)
        yield get(f"{route}-last-event-id-query-{name}", f"{target}?last_event_id={query}", 422)
    header = ((b"last-event-id", b"x"),)
    name = f"{route}-last-event-id-header-wins-over-query"
    yield get(name, f"{target}?last_event_id=3", 422, header)


CH = "/v1/channels/<channel>"
# fmt: off
CASES = [
    # --- GET /healthz and /openapi.json: nothing is read, so nothing can hurt them.
    public("healthz-query-garbage", "GET", "/healthz?%FF%00=%FE&%%=1", 200),
    get("healthz-huge-header", "/healthz", 200, ((b"x-junk", b"j" * 65_536),)),
    public("healthz-post", "POST", "/healthz", 405),
    public("healthz-trailing-slash", "GET", "/healthz/", 404),
    public("openapi-query-garbage", "GET", "/openapi.json?%FF=%00", 200),
    public("openapi-delete", "DELETE", "/openapi.json", 405),
    public("unknown-path-long", "GET", "/" + "x" * 20_000, 404),
    public("unknown-path-nul", "GET", "/v1/%00", 404),
    # --- POST /callbacks/{token}: the token is the credential.
    public("callback-token-garbage", "POST", "/callbacks/x", 401),
    public("callback-token-very-long", "POST", "/callbacks/" + LONG, 401),
    public("callback-token-at-the-length-limit", "POST", "/callbacks/" + "a." * 512, 401),
    public("callback-token-unicode", "POST", "/callbacks/%E2%98%83.%E2%98%83", 401),
    public("callback-token-nul", "POST", "/callbacks/a%00b", 401),
    public("callback-token-invalid-utf8", "POST", "/callbacks/%FF%FE", 401),
    public("callback-token-dotdot", "POST", "/callbacks/..", 401),
    public("callback-token-encoded-slashes", "POST", "/callbacks/..%2F..%2Fv1%2Fchannels", 404),
    public("callback-token-empty", "POST", "/callbacks/", 404),
    public("callback-token-trailing-slash", "POST", "/callbacks/<callback>/", 404),
    public("callback-token-tampered", "POST", "/callbacks/<callback>x", 401),
    public("callback-watch-token", "POST", "/callbacks/<watch>", 401),
    public("callback-blob-token", "POST", "/callbacks/<blob_token>", 401),
    public("callback-expired", "POST", "/callbacks/<expired_callback>", 410),
    public("callback-get", "GET", "/callbacks/<callback>", 405),
    # Anything a sender posts to a channel is kept, however malformed: 200.
    callback("malformed-json", 200, b'{"a": ', JSON),
    callback("invalid-utf8", 200, b"\xff\xfe\xfd", content_type(b"text/plain; charset=utf-8")),
    callback("nul-bytes", 200, b'{"a": "\x00"}\x00', JSON),
    callback("bad-form", 200, b"a=%FF%zz&&=&b",
             content_type(b"application/x-www-form-urlencoded")),
    callback("deep-json", 200, b"[" * 5000 + b"]" * 5000, JSON),
    callback("garbage-content-type", 200, b"{}", content_type(b"\xff/\xfe; boundary=\x00")),
    callback("utf16-json", 200, '{"a": 1}'.encode("utf-16"),
             content_type(b"application/json; charset=utf-16")),
    callback("just-under-the-limit", 200, b"x" * (MAX_CALLBACK - 1)),
    callback("oversize-declared", 413, b"x" * (MAX_CALLBACK + 1)),
    callback("oversize-streamed", 413, (b"x" * 40_000,) * 3),
    callback("length-not-a-number", 400, b"{}", length(b"two")),
    callback("length-negative", 400, b"{}", length(b"-1")),
    callback("length-superscript", 400, b"{}", length("\u00b2".encode("latin-1"))),
    callback("length-5000-digits", 413, b"{}", length(b"9" * 5000)),
    case("callback-task-token-garbage-body", "POST", "/callbacks/<task_callback>", 400,
         b"\xff{", auth=False),
    case("callback-task-token-unknown-task", "POST", "/callbacks/<missing_task_callback>", 404,
         b"{}", auth=False),
    # --- The API key, on every client route alike.
    case("key-missing", "POST", "/v1/channels", 401, auth=False),
    case("key-scheme-only", "POST", "/v1/channels", 401, b"", ((b"authorization", b"Bearer"),),
         False),
    case("key-basic", "POST", "/v1/channels", 401, b"",
         ((b"authorization", b"Basic dGVzdDp0ZXN0"),), False),
    key("10kb", CH, 401, b"Bearer " + b"k" * 10_240),
    key("invalid-utf8", "/v1/tasks/<task>", 401, b"Bearer \xff\xfe"),
    key("nul", "/v1/blobs/<blob>", 401, BEARER + b"\x00"),
    key("of-another-tenant", CH, 404, OTHER[1]),
    # --- POST /v1/channels: an optional JSON object.
    channels("json-truncated", 400, b'{"label": '),
    channels("json-trailing-garbage", 400, b"{} x"),
    channels("json-single-quotes", 400, b"{'label': 'x'}"),
    channels("json-trailing-comma", 400, b'{"label": "x",}'),
    channels("json-nan", 400, b'{"ttl_seconds": NaN}'),
    channels("json-infinity", 400, b'{"ttl_seconds": 1e400}'),
    channels("json-bom", 400, b"\xef\xbb\xbf{}"),
    channels("json-invalid-utf8", 400, b'{"label": "\xff"}'),
    channels("json-lone-surrogate", 400, b'{"label": "\\ud800"}'),
    channels("json-raw-nul", 400, b'{"label": "a\x00b"}'),
    channels("json-too-deep", 400, b"[" * 2000 + b"]" * 2000),
    channels("json-utf16", 400, '{"label": "x"}'.encode("utf-16")),
    channels("array", 422, b"[]"),
    channels("array-of-object", 422, b'[{"label": "x"}]'),
    channels("deep-array", 422, b"[" * 500 + b"]" * 500),
    channels("string", 422, b'"label"'),
    channels("number", 422, b"42"),
    channels("null", 422, b"null"),
    channels("true", 422, b"true"),
    channels("label-number", 422, js({"label": 5})),
    channels("label-array", 422, js({"label": ["x"]})),
    channels("label-object", 422, js({"label": {"x": 1}})),
    channels("label-bool", 422, js({"label": True})),
    channels("label-201-chars", 422, js({"label": "x" * 201})),
    channels("label-60k", 422, js({"label": "x" * 60_000})),
    channels("label-nul", 422, js({"label": "a\x00b"})),
    channels("label-unicode", 201, js({"label": "\u2603\U0001f600" * 100})),
    channels("ttl-string", 422, js({"ttl_seconds": "soon"})),
    channels("ttl-float", 422, js({"ttl_seconds": 1.5})),
    channels("ttl-bool", 422, js({"ttl_seconds": True})),
    channels("ttl-negative", 422, js({"ttl_seconds": -1})),
    channels("ttl-int64", 422, js({"ttl_seconds": 2**63 - 1})),
    channels("ttl-30-digits", 422, b'{"ttl_seconds": ' + b"9" * 30 + b"}"),
    channels("ttl-array", 422, js({"ttl_seconds": [60]})),
    channels("duplicate-key", 422, b'{"label": "a", "label": 5}'),
    channels("unknown-field", 422, js({"lable": "x"})),
    channels("unknown-huge-field", 422, js({LONG: 1})),
    channels("whitespace-body", 201, b" \r\n\t "),
    channels("oversize-declared", 413, b" " * 65_537),
    channels("oversize-streamed", 413, (b" " * 50_000,) * 2),
    channels("length-not-a-number", 400, b"{}", length(b"0x2")),
    case("channels-trailing-slash", "POST", "/v1/channels/", 404),
    case("channels-delete", "DELETE", "/v1/channels", 405),
    # --- GET /v1/channels/{channel_id}: a path parameter.
    get("channel-id-dotdot-encoded-slashes", "/v1/channels/..%2F..%2Fhealthz", 404),
    get("channel-id-encoded-slash", "/v1/channels/ch_%2F<channel>", 404),
    get("channel-id-dotdot", "/v1/channels/..", 404),
    get("channel-id-10kb", "/v1/channels/ch_" + LONG, 404),
    get("channel-id-unicode", "/v1/channels/ch_%E2%98%83", 404),
    get("channel-id-nul", "/v1/channels/ch_%00", 404),
    get("channel-id-invalid-utf8", "/v1/channels/ch_%FF%FE", 404),
    get("channel-id-uppercase", "/v1/channels/ch_" + "A" * 24, 404),
    get("channel-id-with-suffix", CH + "%00", 404),
    get("channel-trailing-slash", CH + "/", 404),
    case("channel-put", "PUT", CH, 405),
    # --- A channel's history, its deliveries, its callback URLs.
    get("deliveries-limit-0", CH + "/deliveries?limit=0", 422),
    get("deliveries-limit-huge", CH + "/deliveries?limit=" + "9" * 30, 422),
    get("deliveries-before-junk", CH + "/deliveries?before=%00", 422),
    get("deliveries-task-id-201", CH + "/deliveries?task_id=" + "x" * 201, 422),
    key("deliveries-of-another-tenant", CH + "/deliveries", 404, OTHER[1]),
    key("deliveries-export-of-another", CH + "/deliveries.ndjson", 404, OTHER[1]),
    get("delivery-unknown", "/v1/deliveries/dlv_" + "0" * 24, 404),
    get("delivery-10kb", "/v1/deliveries/dlv_" + LONG, 404),
    key("delivery-of-another-tenant", "/v1/deliveries/<delivery>", 404, OTHER[1]),
    key("delivery-body-of-another", "/v1/deliveries/<delivery>/body", 404, OTHER[1]),
    case("redeliver-url-number", "POST", "/v1/deliveries/<delivery>/redeliver", 422,
         js({"url": 5})),
    case("redeliver-url-ftp", "POST", "/v1/deliveries/<delivery>/redeliver", 422,
         js({"url": "ftp://x/y"})),
    case("redeliver-json-truncated", "POST", "/v1/deliveries/<delivery>/redeliver", 400,
         b'{"url": '),
    key("callback-urls-of-another", CH + "/callback-urls", 404, OTHER[1]),
    case("callback-url-revoke-unknown", "DELETE", "/v1/callback-urls/cbu_" + "0" * 24, 404),
    case("callback-url-revoke-junk", "DELETE", "/v1/callback-urls/..", 404),
    case("channel-delete-unknown", "DELETE", "/v1/channels/ch_" + "0" * 24, 404),
    case("channel-delete-not-an-id", "DELETE", "/v1/channels/..", 404),
    # --- GET /v1/channels/{channel_id}/events: ids, filters, watch tokens.
    *stream_cases("channel-stream", CH + "/events"),
    get("channel-stream-task-id-201-chars", CH + "/events?task_id=" + "x" * 201, 422),
    get("channel-stream-task-id-nul", CH + "/events?task_id=a%00", 422),
    get("channel-stream-types-empty", CH + "/events?types=,,,", 422),
    get("channel-stream-types-33", CH + "/events?types=" + ",".join(map(str, range(33))), 422),
    get("channel-stream-types-huge", CH + "/events?types=" + LONG, 422),
    get("channel-stream-types-nul", CH + "/events?types=a%00", 422),
    get("channel-stream-format-unknown", CH + "/events?format=ndjson", 422),
    get("channel-stream-format-empty", CH + "/events?format=", 422),
    get("channel-stream-format-nul", CH + "/events?format=smee%00", 422),
    get("channel-stream-format-smee-opens", CH + "/events?format=smee", 200),
    get("channel-stream-unknown-channel", f"/v1/channels/ch_{ZEROS}/events", 404),
    get("channel-stream-id-encoded-slashes", "/v1/channels/..%2F<channel>/events", 404),
    get("channel-stream-watch-garbage", CH + "/events?token=x", 401, auth=False),
    get("channel-stream-watch-empty", CH + "/events?token=", 401, auth=False),
    get("channel-stream-watch-very-long", CH + "/events?token=" + LONG, 401, auth=False),
    get("channel-stream-watch-nul", CH + "/events?token=<watch>%00", 401, auth=False),
    get("channel-stream-watch-invalid-utf8", CH + "/events?token=%FF<watch>", 401, auth=False),
    get("channel-stream-watch-of-another-channel", CH + "/events?token=<other_watch>", 401,
        auth=False),
    get("channel-stream-callback-token-as-watch", CH + "/events?token=<callback>", 401,
        auth=False),
    get("channel-stream-watch-expired", CH + "/events?token=<expired_watch>", 410, auth=False),
    get("channel-stream-watch-for-a-malformed-id", "/v1/channels/ch_x/events?token=<bad_id_watch>",
        401, auth=False),
    # Odd but valid: a type nobody sends is a filter that matches nothing; the stream opens.
    get("channel-stream-types-invalid-utf8-opens", CH + "/events?types=%FF%FE", 200),
    get("channel-stream-last-event-id-blank-opens", CH + "/events", 200,
        ((b"last-event-id", b"  "),)),
    # --- GET /v1/channels/{channel_id}/tasks/{task_id}?wait=
    get("channel-task-id-201-chars", CH + "/tasks/" + "x" * 201, 422),
    get("channel-task-id-nul", CH + "/tasks/t%00", 422),
    get("channel-task-id-unicode", CH + "/tasks/%E2%98%83", 404),
    get("channel-task-id-invalid-utf8", CH + "/tasks/%FF", 404),
    get("channel-task-id-encoded-slash", CH + "/tasks/a%2Fb", 404),
    get("channel-task-unknown-channel", "/v1/channels/ch_x/tasks/t-1", 404),
    get("channel-task-wait-negative", CH + "/tasks/t?wait=-1", 422),
    get("channel-task-wait-text", CH + "/tasks/t?wait=abc", 422),
    get("channel-task-wait-exponent", CH + "/tasks/t?wait=1e3", 422),
    get("channel-task-wait-too-long", CH + "/tasks/t?wait=99999", 422),
    get("channel-task-wait-huge", CH + "/tasks/t?wait=" + "9" * 5000, 422),
    get("channel-task-wait-invalid-utf8", CH + "/tasks/t?wait=%FF", 422),
    get("channel-task-wait-empty", CH + "/tasks/t?wait=", 422),
    # --- POST /v1/callback-urls: {"channel_id", "ttl_seconds"?}
    callback_urls("empty-body", 400),
    callback_urls("malformed-json", 400, b'{"channel_id"'),
    callback_urls("invalid-utf8", 400, b'{"channel_id": "\xfe"}'),
    callback_urls("array", 422, js([{"channel_id": "x"}])),
    callback_urls("string", 422, b'"<channel>"'),
    callback_urls("null", 422, b"null"),
    callback_urls("no-channel", 422, b"{}"),
    callback_urls("channel-number", 422, url_for(5)),
    callback_urls("channel-array", 422, url_for(["x"])),
    callback_urls("channel-object", 422, url_for({})),
    callback_urls("channel-null", 422, url_for(None)),
    callback_urls("channel-65-chars", 422, url_for("c" * 65)),
    callback_urls("channel-nul", 422, url_for("<channel>\x00")),
    callback_urls("channel-path-trick", 404, url_for("../<channel>")),
    callback_urls("channel-unknown", 404, url_for("ch_" + ZEROS)),
    callback_urls("ttl-string", 422, url_for(ttl_seconds="soon")),
    callback_urls("ttl-zero", 422, url_for(ttl_seconds=0)),
    callback_urls("ttl-float", 422, url_for(ttl_seconds=0.5)),
    callback_urls("ttl-huge", 422, url_for(ttl_seconds=2**62)),
    callback_urls("misspelt-ttl", 422, url_for(ttl=60)),
    callback_urls("oversize", 413, url_for("x" * 70_000)),
    # --- POST /v1/tasks: the provider, the input, every image.
    tasks("malformed-json", 400, b'{"provider": "segmind", '),
    tasks("invalid-utf8", 400, b'{"provider": "\xc3\x28"}'),
    tasks("empty-body", 400),
    tasks("array", 422, js([TASK])),
    tasks("string", 422, b'"segmind"'),
    tasks("provider-missing", 422, js({"input": INPUT})),
    tasks("provider-object", 422, task_and(provider={})),
    # A list is a route of providers to try in order: each one of them, at most four.
    tasks("provider-array-empty", 422, task_and(provider=[])),
    tasks("provider-array-nested", 422, task_and(provider=[["segmind"]])),
    tasks("provider-array-twice", 422, task_and(provider=["segmind", "segmind"])),
    tasks("provider-array-long", 422, task_and(provider=["segmind"] * 1000)),
    tasks("provider-number", 422, task_and(provider=1)),
    tasks("provider-null", 422, task_and(provider=None)),
    tasks("provider-uppercase", 422, task_and(provider="SEGMIND")),
    tasks("provider-nul", 422, task_and(provider="segmind\x00")),
    tasks("provider-not-configured", 422, task_and(provider="acedata")),
    tasks("input-missing", 422, js({"provider": "segmind"})),
    tasks("input-array", 422, task_and(input=[INPUT])),
    tasks("input-string", 422, task_and(input="edit")),
    tasks("input-null", 422, task_and(input=None)),
    tasks("unknown-field", 422, task_and(callback="x")),
    tasks("unknown-input-field", 422, task_with(seed=1)),
    tasks("prompt-object", 422, task_with(prompt={"text": "p"})),
    tasks("prompt-array", 422, task_with(prompt=["p"])),
    tasks("prompt-number", 422, task_with(prompt=7)),
    tasks("prompt-blank", 422, task_with(prompt=" \t\n")),
    tasks("prompt-nul", 422, task_with(prompt="a\x00b")),
    tasks("prompt-huge", 422, task_with(prompt="p" * 32_001)),
    tasks("images-object", 422, task_with(images={"0": "x"})),
    tasks("images-string", 422, task_with(images=data_url(PNG))),
    tasks("images-empty", 422, task_with(images=[])),
    tasks("images-17", 422, task_with(images=[data_url(PNG)] * 17)),
    tasks("image-number", 422, image(5)),
    tasks("image-object", 422, image({"url": "x"})),
    tasks("image-null", 422, image(None)),
    tasks("image-empty-string", 422, image("")),
    tasks("image-nul", 422, image("\x00")),
    tasks("image-file-url", 422, image("file:///etc/passwd")),
    tasks("image-javascript-url", 422, image("javascript:alert(1)")),
    tasks("image-bad-base64", 422, image("data:image/png;base64,%%%")),
    tasks("image-data-url-not-base64", 422, image("data:image/png,\x89PNG")),
    tasks("image-not-an-image", 422, image(data_url(b"\x00" * 100))),
    tasks("image-gif", 422, image(data_url(GIF, "image/gif"))),
    tasks("image-truncated-png", 422, image(data_url(PNG[:40]))),
    tasks("image-too-large", 422, image(data_url(b"\x89PNG" + b"0" * (MAX_UPLOAD + 1)))),
    tasks("image-blob-path-trick", 422, image("blob_../../etc/passwd")),
    tasks("image-unknown-blob", 422, image("blob_" + ZEROS)),
    case("tasks-image-blob-of-another-tenant", "POST", "/v1/tasks", 422, image("<blob>"),
         (OTHER,), auth=False),
    tasks("mask-object", 422, task_with(mask={})),
    tasks("size-object", 422, task_with(size={})),
    tasks("size-unknown", 422, task_with(size="99999x99999")),
    tasks("quality-array", 422, task_with(quality=["high"])),
    tasks("n-zero", 422, task_with(n=0)),
    tasks("n-float", 422, task_with(n=1.5)),
    tasks("n-bool", 422, task_with(n=True)),
    tasks("n-huge", 422, task_with(n=10**18)),
    tasks("channel-object", 422, task_and(channel_id={})),
    tasks("channel-unknown", 422, task_and(channel_id="ch_x")),
    tasks("channel-huge", 422, task_and(channel_id=LONG)),
    tasks("oversize-declared", 413, b"{}", length(b"%d" % (80 * 1024 * 1024 + 1))),
    tasks("length-superscript", 400, b"{}", length("\u00b9".encode("latin-1"))),
    # --- GET /v1/tasks/{task_id} and its stream.
    get("task-id-dotdot-encoded-slashes", "/v1/tasks/..%2F..%2Fhealthz", 404),
    get("task-id-10kb", "/v1/tasks/task_" + LONG, 404),
    get("task-id-unicode", "/v1/tasks/task_%E2%98%83", 404),
    get("task-id-nul", "/v1/tasks/<task>%00", 404),
    get("task-id-invalid-utf8", "/v1/tasks/task_%FF", 404),
    get("task-id-of-a-channel", "/v1/tasks/<channel>", 404),
    case("task-delete", "DELETE", "/v1/tasks/<task>", 405),
    *stream_cases("task-stream", "/v1/tasks/<task>/events"),
    get("task-stream-unknown-task", f"/v1/tasks/task_{ZEROS}/events", 404),
    get("task-stream-id-path-trick", "/v1/tasks/..%2F<task>/events", 404),
    # --- POST /v1/tasks/{task_id}/cancel (never of the shared task: it must stay as it is).
    case("cancel-unknown-task", "POST", f"/v1/tasks/task_{ZEROS}/cancel", 404),
    case("cancel-a-channel", "POST", "/v1/tasks/<channel>/cancel", 404),
    case("cancel-id-10kb", "POST", "/v1/tasks/task_" + LONG + "/cancel", 404),
    get("cancel-by-get", "/v1/tasks/<task>/cancel", 405),
    # --- GET /v1/usage: dates only.
    get("usage-from-invalid-utf8", "/v1/usage?from=%FF", 422),
    get("usage-from-no-such-day", "/v1/usage?from=2026-02-30", 422),
    get("usage-to-10kb", "/v1/usage?to=" + LONG, 422),
    get("usage-to-before-from", "/v1/usage?from=2026-12-02&to=2026-12-01", 422),
    # --- POST /v1/uploads: multipart with a file field.
    upload("no-content-type", 415, file(PNG)),
    upload("json", 415, b"{}", JSON),
    upload("multipart-mixed", 415, file(PNG), content_type(b"multipart/mixed; boundary=BB")),
    upload("content-type-invalid-utf8", 415, b"x", content_type(b"\xff\xfe/\xfd")),
    upload("no-boundary", 400, file(PNG), content_type(b"multipart/form-data")),
    # An empty boundary makes "----" the closing line: an empty form, with no file in it.
    upload("empty-boundary", 422, b"----\r\n", content_type(b"multipart/form-data; boundary=")),
    upload("wrong-boundary", 400, file(PNG), content_type(b"multipart/form-data; boundary=x")),
    upload("truncated", 400, file(PNG)[:-40], FORM),
    upload("empty-body", 400, b"", FORM),
    upload("garbage-body", 400, b"\xff\x00" * 100, FORM),
    upload("no-part-headers", 400, b"--BB\r\n\r\nxyz\r\n--BB--\r\n", FORM),
    upload("only-closing", 422, b"--BB--\r\n", FORM),
    upload("file-as-text-field", 422, file(PNG, filename=None), FORM),
    upload("wrong-field-name", 422, file(PNG, name="image"), FORM),
    upload("nine-parts", 400, multipart(*[(f"f{i}", b"a.png", b"x") for i in range(9)]), FORM),
    upload("not-an-image", 422, file(b"\x00" * 64), FORM),
    upload("truncated-image", 422, file(PNG[:50]), FORM),
    upload("gif", 422, file(GIF, filename=b"a.gif"), FORM),
    upload("huge-part", 413, file(b"\x89PNG" + b"0" * MAX_UPLOAD), FORM),
    upload("oversize-declared", 413, b"x", FORM, length(b"%d" % (MAX_UPLOAD * 2))),
    upload("oversize-streamed", 413, (b"x" * 100_000,) * 3, FORM),
    # The filename is never used, so nothing in it matters.
    upload("filename-path-traversal", 201, file(PNG, filename=b"../../etc/passwd\x00.png"), FORM),
    upload("filename-invalid-utf8", 201, file(PNG, filename=b"\xff\xfe.png"), FORM),
    # --- POST /v1/images/edits: OpenAI's multipart fields; errors in OpenAI's shape.
    edits("json-body", 400, js({"prompt": "p"}), JSON),
    edits("no-boundary", 400, edit_form(), content_type(b"multipart/form-data")),
    edits("truncated", 400, edit_form()[:-8], FORM),
    edits("garbage", 400, b"\x00\xff" * 100, FORM),
    edits("no-image", 400, multipart(("prompt", None, b"p")), FORM),
    edits("image-not-an-image", 400, edit_form(image=b"not an image"), FORM),
    edits("image-gif", 400, edit_form(image=GIF), FORM),
    edits("mask-not-an-image", 400, edit_form(("mask", b"m.png", b"nope")), FORM),
    edits("no-prompt", 400, multipart(("image", b"a.png", PNG)), FORM),
    edits("prompt-blank", 400, edit_form(prompt=b"   "), FORM),
    edits("prompt-huge", 400, edit_form(prompt=b"a" * 40_000), FORM),
    edits("prompt-nul", 400, edit_form(prompt=b"a\x00b"), FORM),
    edits("prompt-twice", 400, edit_form(("prompt", None, b"again")), FORM),
    edits("size-unknown", 400, edit_form(("size", None, b"999x999")), FORM),
    edits("n-zero", 400, edit_form(("n", None, b"0")), FORM),
    edits("n-word", 400, edit_form(("n", None, b"two")), FORM),
    edits("n-huge", 400, edit_form(("n", None, b"9" * 30)), FORM),
    edits("quality-unknown", 400, edit_form(("quality", None, b"best")), FORM),
    edits("compression-101", 400, edit_form(("output_compression", None, b"101")), FORM),
    edits("compression-negative", 400, edit_form(("output_compression", None, b"-1")), FORM),
    edits("stream-true", 400, edit_form(("stream", None, b"true")), FORM),
    edits("unknown-field", 400, edit_form(("colour", None, b"blue")), FORM),
    edits("unknown-provider", 400, edit_form(("provider", None, b"nobody")), FORM),
    edits("callback-url-ftp", 400, edit_form(("callback_url", None, b"ftp://hooks.example/")), FORM),
    edits("callback-url-credentials", 400,
          edit_form(("callback_url", None, b"http://u:p@hooks.example/")), FORM),
    edits("seventeen-images", 400,
          multipart(("prompt", None, b"p"), *[("image[]", b"a.png", PNG)] * 17), FORM),
    edits("oversize-declared", 413, edit_form(), FORM, length(b"9" * 12)),
    case("edits-no-key", "POST", "/v1/images/edits", 401, edit_form(), (FORM,), False),
    # --- /v1/webhooks: a URL and one of channel_id, task_id; read and deleted by id.
    webhooks("malformed-json", 400, b'{"url": '),
    webhooks("invalid-utf8", 400, b'{"url": "\xff"}'),
    webhooks("array", 422, js([{"url": "http://hooks.example/"}])),
    webhooks("no-url", 422, js({"channel_id": "<channel>"})),
    webhooks("url-number", 422, hook(5)),
    webhooks("url-object", 422, hook({})),
    webhooks("url-not-http", 422, hook("ftp://hooks.example/hook")),
    webhooks("url-javascript", 422, hook("javascript:alert(1)")),
    webhooks("url-no-host", 422, hook("http:///hook")),
    webhooks("url-credentials", 422, hook("http://user:pw@hooks.example/hook")),
    webhooks("url-nul", 422, hook("http://hooks.example/\x00")),
    webhooks("url-huge", 422, hook("http://hooks.example/" + LONG)),
    webhooks("both-channel-and-task", 422, hook(task_id="<task>")),
    webhooks("neither-channel-nor-task", 422, js({"url": "http://hooks.example/"})),
    webhooks("channel-object", 422, hook(channel_id={})),
    webhooks("channel-unknown", 404, hook(channel_id="ch_" + ZEROS)),
    webhooks("task-unknown", 404, js({"url": "http://hooks.example/", "task_id": "task_x"})),
    webhooks("unknown-field", 422, hook(secret="mine")),
    webhooks("oversize", 413, hook("http://hooks.example/" + "x" * 70_000)),
    case("webhooks-no-key", "GET", "/v1/webhooks", 401, auth=False),
    case("webhooks-put", "PUT", "/v1/webhooks", 405),
    get("webhook-id-dotdot-encoded-slashes", "/v1/webhooks/..%2F..%2Fhealthz", 404),
    get("webhook-id-10kb", "/v1/webhooks/wh_" + LONG, 404),
    get("webhook-id-unicode", "/v1/webhooks/wh_%E2%98%83", 404),
    get("webhook-id-nul", "/v1/webhooks/wh_%00", 404),
    get("webhook-id-invalid-utf8", "/v1/webhooks/wh_%FF", 404),
    case("webhook-delete-unknown", "DELETE", f"/v1/webhooks/wh_{ZEROS}", 404),
    case("webhook-delete-no-key", "DELETE", f"/v1/webhooks/wh_{ZEROS}", 401, auth=False),
    # --- GET /v1/blobs/{blob_id}
    get("blob-id-dotdot-encoded-slashes", "/v1/blobs/..%2F..%2Fhealthz", 404),
    get("blob-id-10kb", "/v1/blobs/blob_" + LONG, 404),
    get("blob-id-unicode", "/v1/blobs/blob_%E2%98%83", 404),
    get("blob-id-nul", "/v1/blobs/<blob>%00", 404),
    get("blob-id-invalid-utf8", "/v1/blobs/blob_%FF", 404),
    get("blob-id-uppercase", "/v1/blobs/blob_" + "F" * 24, 404),
    get("blob-no-key", "/v1/blobs/<blob>", 401, auth=False),
    # --- GET /blobs/{token}: a signed URL, no key.
    public("public-blob-token-garbage", "GET", "/blobs/x", 401),
    public("public-blob-token-very-long", "GET", "/blobs/" + LONG, 401),
    public("public-blob-token-unicode", "GET", "/blobs/%E2%98%83", 401),
    public("public-blob-token-nul", "GET", "/blobs/<blob_token>%00", 401),
    public("public-blob-token-invalid-utf8", "GET", "/blobs/%FF%FE", 401),
    public("public-blob-token-tampered", "GET", "/blobs/<blob_token>x", 401),
    public("public-blob-callback-token", "GET", "/blobs/<callback>", 401),
    public("public-blob-encoded-slashes", "GET", "/blobs/..%2F..%2Fv1%2Fblobs", 404),
    public("public-blob-empty", "GET", "/blobs/", 404),
    public("public-blob-expired", "GET", "/blobs/<expired_blob>", 410),
    public("public-blob-missing", "GET", "/blobs/<missing_blob_token>", 404),
    public("public-blob-post", "POST", "/blobs/<blob_token>", 405),
]
# fmt: on


@dataclass
class Hub:
    app: Starlette
    client: httpx.AsyncClient
    # Real objects and tokens, for the <placeholders> of the cases.
    values: dict[str, str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hub]:
    """One hub for the whole module (a fresh one per case would cost most of its time): a
    case only reads what the hub holds or adds to it, so none can change another's answer."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("hostile"),
        secret_keys=(Secret("test-secret"),),
        api_keys=(Secret(KEY), Secret(OTHER_KEY)),
        public_url="http://hub.test",
        sqlite_synchronous="NORMAL",
        rate_limit_per_key=0,
        rate_limit_per_callback=0,
        # Segmind is configured so that tasks are accepted (a task's stream takes a
        # Last-Event-ID), and no task is ever worked: nothing runs in the background, where
        # the engine's retry jitter would draw from the random module while hypothesis, on
        # another thread, checks that nothing but itself does.
        extra_env=SEGMIND,
        worker_concurrency=0,
        max_callback_bytes=MAX_CALLBACK,
        max_upload_bytes=MAX_UPLOAD,
        max_image_bytes=MAX_UPLOAD,
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as client:
            yield Hub(app, client, await make_objects(client, app.state.hub.signer))


async def make_objects(client: httpx.AsyncClient, signer: Signer) -> dict[str, str]:
    channel = (await client.post("/v1/channels", headers=AUTH)).json()
    other = (await client.post("/v1/channels", headers=AUTH)).json()
    upload = await client.post("/v1/uploads", files={"file": ("a.png", PNG)}, headers=AUTH)
    task = (await client.post("/v1/tasks", json=TASK, headers=AUTH)).json()
    blob_id = upload.json()["id"]
    later, before = int(time.time()) + 3600, int(time.time()) - 1
    await client.post(channel["callback_url"], json={"n": 1})
    page = await client.get(f"/v1/channels/{channel['id']}/deliveries", headers=AUTH)
    return {
        "delivery": page.json()["deliveries"][0]["id"],
        "channel": channel["id"],
        "task": task["id"],
        "blob": blob_id,
        "callback": channel["callback_url"].rsplit("/", 1)[1],
        "watch": channel["watch_url"].split("token=", 1)[1],
        "other_watch": other["watch_url"].split("token=", 1)[1],
        "bad_id_watch": signer.issue(WATCH, Claims("ch_x", later)),
        "blob_token": signer.issue(BLOB, Claims(None, later, blob_id=blob_id)),
        "task_callback": signer.issue(CALLBACK, Claims(None, later, task_id=task["id"])),
        "missing_task_callback": signer.issue(CALLBACK, Claims(None, later, task_id="task_x")),
        "missing_blob_token": signer.issue(BLOB, Claims(None, later, blob_id="blob_x")),
        "expired_callback": signer.issue(CALLBACK, Claims(channel["id"], before)),
        "expired_watch": signer.issue(WATCH, Claims(channel["id"], before)),
        "expired_blob": signer.issue(BLOB, Claims(None, before, blob_id=blob_id)),
    }


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def fill(data: bytes, values: dict[str, str]) -> bytes:
    """``data`` with each <placeholder> replaced by the real object's id or token."""

    def value(match: re.Match[bytes]) -> bytes:
        return values.get(match.group(1).decode(), match.group(0).decode()).encode()

    return re.sub(rb"<(\w+)>", value, data)


async def send(app: Any, hostile: Hostile, values: dict[str, str]) -> Answer:
    """One request to the ASGI app, as uvicorn hands it over: the raw target, a path
    percent-decoded (with U+FFFD for invalid UTF-8), headers and query string as bytes."""

    raw_path, _, query = fill(hostile.target.encode(), values).partition(b"?")
    chunks = hostile.body if isinstance(hostile.body, tuple) else (hostile.body,)
    chunks = tuple(fill(chunk, values) for chunk in chunks)
    headers = [(b"host", b"hub.test")]
    names = {name for name, _ in hostile.headers}
    if hostile.auth:
        headers.append((b"authorization", BEARER))
    if isinstance(hostile.body, bytes) and b"content-length" not in names:
        headers.append((b"content-length", str(len(chunks[0])).encode()))
    headers.extend(hostile.headers)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": hostile.method,
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("hub.test", 80),
    }
    pending = list(chunks)
    answered = asyncio.Event()
    answer = Answer(0, {}, b"")

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send_message(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.lower(): v for k, v in message.get("headers", [])}
            if answer.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                answered.set()  # a stream never ends by itself: hang up once it has begun
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")
            if not message.get("more_body", False):
                answered.set()

    async with asyncio.timeout(10):
        await app(scope, receive, send_message)
    return answer


DOCUMENTED = build(Settings(public_url="http://hub.test"))


def documented(method: str, path: str) -> set[int] | None:
    """The statuses the description gives this request's operation (None: no such route)."""
    for template, item in DOCUMENTED["paths"].items():
        if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", template), path):
            operation = item.get(method.lower())
            return {405} if operation is None else {int(s) for s in operation["responses"]}
    return None


def assert_well_answered(answer: Answer, expected: int, method: str, path: str) -> None:
    assert answer.status < 500, answer.body
    assert answer.status == expected, answer.body
    statuses = documented(method, path)
    assert statuses is None or answer.status in statuses, (answer.status, statuses)
    if answer.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
        assert answer.status == 200
        return
    assert answer.headers.get(b"content-type") == b"application/json", answer.headers
    body = orjson.loads(answer.body)
    if answer.status >= 400 and path == "/v1/images/edits":
        # OpenAI's shape, which its clients read.
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    elif answer.status >= 400:
        assert set(body) == {"error"}, body
        # A 422 names the field at fault on its own, as well as in the message.
        keys = {"code", "message", "field"} if answer.status == 422 else {"code", "message"}
        assert set(body["error"]) == keys, body
        assert all(isinstance(v, str) and v for v in body["error"].values()), body
        if answer.status == 422:
            assert body["error"]["message"].startswith(body["error"]["field"] + ":"), body


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("hostile", CASES)
async def test_hostile_input_is_answered_4xx_in_the_error_shape(hub, hostile):
    answer = await send(hub.app, hostile, hub.values)
    path = unquote(re.sub(r"<(\w+)>", lambda m: hub.values[m.group(1)], hostile.target))
    assert_well_answered(answer, hostile.status, hostile.method, path.partition("?")[0])


def test_every_route_meets_hostile_input():
    """No route is left out of the table above."""
    hit = set()
    for param in CASES:
        hostile: Hostile = param.values[0]
        path = re.sub(r"<\w+>", "x", hostile.target).partition("?")[0]
        for template in DOCUMENTED["paths"]:
            if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", template), path):
                hit.add(template)
    assert hit == set(DOCUMENTED["paths"])


# --- Fuzzing the JSON bodies: whatever JSON arrives, the answer is a 4xx in the error shape
# (or the object was made). Strings never look like http(s) URLs: a task image that was one
# would be fetched. Some are a real channel or blob, so that checks past those run too.
def no_urls(value: str) -> bool:
    return "http" not in value.lower()


texts = st.text(st.characters(codec="utf-8"), max_size=40).filter(no_urls)
objects = st.sampled_from(["<channel>", "<blob>"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | texts
    | objects,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def some(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value for a field (so that the checks after it run too), else any
    JSON at all in its place."""
    return st.integers(0, 3).flatmap(lambda pick: json_values if pick == 0 else value)


ttl = some(st.integers(-10, 2**40))
task_input = st.fixed_dictionaries(
    {"prompt": some(texts), "images": some(st.lists(some(st.just("<blob>")), max_size=3))},
    optional={
        "mask": some(objects),
        "size": some(st.sampled_from(SIZES)),
        "quality": some(st.sampled_from(QUALITIES)),
        "background": some(st.sampled_from(BACKGROUNDS)),
        "output_format": some(st.sampled_from(OUTPUT_FORMATS)),
        "n": some(st.integers(-1, 12)),
    },
)
FUZZ = {
    "/v1/channels": (
        some(st.fixed_dictionaries({}, optional={"label": some(texts), "ttl_seconds": ttl})),
        {201},
    ),
    "/v1/callback-urls": (
        some(st.fixed_dictionaries({"channel_id": some(objects)}, optional={"ttl_seconds": ttl})),
        {201},
    ),
    "/v1/tasks": (
        some(
            st.fixed_dictionaries(
                {
                    "provider": some(st.just("segmind")),
                    "input": some(task_input),
                },
                optional={"channel_id": some(objects)},
            )
        ),
        {202},
    ),
}
FUZZ_EXAMPLES = 150


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("path", sorted(FUZZ))
async def test_fuzzed_json_bodies_are_never_a_server_error(hub, path):
    strategy, made = FUZZ[path]
    loop = asyncio.get_running_loop()

    # Hypothesis drives its examples synchronously, so it runs in a thread and hands each
    # request to this test's event loop, where the app lives.
    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(body=strategy)
    def fuzz(body: Any) -> None:
        content = fill(orjson.dumps(body), hub.values)
        request = hub.client.post(path, content=content, headers=AUTH)
        response = asyncio.run_coroutine_threadsafe(request, loop).result(timeout=30)
        assert response.status_code < 500, response.text
        assert response.headers["content-type"] == "application/json"
        if response.status_code not in made:
            assert response.status_code in {400, 404, 413, 422}, response.text
            assert set(response.json()["error"]) <= {"code", "message", "field"}

    await asyncio.to_thread(fuzz)
