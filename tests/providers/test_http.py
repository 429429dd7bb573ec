import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from hub.providers.base import ErrorCode, ProviderConfig, ProviderError, Resend
from hub.providers.http import (
    MAX_RETRY_AFTER,
    ProviderHTTP,
    base64_output,
    describe_error,
    header,
    parse_retry_after,
    url_output,
)

from .helpers import KEY, config, make_png, mock_client

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-5", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
        ("99999999", MAX_RETRY_AFTER),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after(value: str | None, expected: float | None):
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    "body, content_type, expected",
    [
        (
            b'{"success": false, "error": {"code": "invalid_token", "message": "bad token"}, "trace_id": "t"}',
            "application/json",
            "invalid_token bad token",
        ),
        (b'{"error": "Rate limit exceeded."}', "application/json", "Rate limit exceeded."),
        (
            b'{"error": "Invalid input for model", "details": "prompt is required"}',
            "application/json",
            "Invalid input for model (prompt is required)",
        ),
        (b'{"code": 400, "message": "image is required"}', "application/json", "image is required"),
        (b'{"code": 401, "msg": "token expired"}', "application/json", "token expired"),
        (
            b"<html>\r\n<head><title>405 Not Allowed</title></head><body>nginx</body></html>",
            "text/html",
            "an HTML page (405 Not Allowed)",
        ),
        (b"<html><body>oops</body></html>", "", "an HTML page"),
        (b"upstream connect error\nmore", "text/plain", "upstream connect error"),
        (b"", "", ""),
        (b'{"weird": 1}', "application/json", '{"weird":1}'),
    ],
)
def test_messages_per_provider_shape(body: bytes, content_type: str, expected: str):
    assert describe_error(body, content_type) == expected


def test_long_messages_are_clipped():
    assert len(describe_error(b'{"error": "' + b"x" * 5000 + b'"}')) == 300


def respond(*args: object, **kwargs: object):
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(*args, **kwargs)  # type: ignore[arg-type]

    return handler


async def call(handler, path: str = "/v1/thing", **options: object):
    async with mock_client(handler) as client:
        caller = ProviderHTTP(config("acedata"), client, {"Authorization": f"Bearer {KEY}"})
        return await caller.request("POST", path, json={"a": 1}, **options)  # type: ignore[arg-type]


async def test_a_good_answer_is_read_with_the_auth_header():
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True}, headers={"x-request-id": "r1"})

    reply = await call(handler)
    assert (reply.status, reply.content, reply.headers["x-request-id"]) == (
        200,
        b'{"ok":true}',
        "r1",
    )
    (request,) = seen
    assert str(request.url) == "http://acedata.test/v1/thing"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.extensions["timeout"] == {
        "connect": 10.0,
        "read": 120.0,
        "write": 120.0,
        "pool": 120.0,
    }


@pytest.mark.parametrize(
    "status, headers, retry_after",
    [
        (429, {"Retry-After": "7"}, 7.0),
        (503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        (500, {}, None),
        (502, {}, None),
        (504, {}, None),
        (408, {}, None),
    ],
)
async def test_rate_limits_and_server_errors_are_retryable(status, headers, retry_after):
    with pytest.raises(ProviderError) as caught:
        await call(respond(status, json={"error": "busy"}, headers=headers))
    error = caught.value
    assert (error.retryable, error.status, error.retry_after) == (True, status, retry_after)
    assert error.message == f"acedata: HTTP {status}: busy"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 406, 410, 422])
async def test_other_client_errors_are_final(status: int):
    with pytest.raises(ProviderError) as caught:
        await call(respond(status, json={"error": "nope"}, headers={"Retry-After": "5"}))
    error = caught.value
    assert (error.retryable, error.status, error.retry_after) == (False, status, None)
    assert error.message == f"acedata: HTTP {status}: nope"


async def test_the_key_never_appears_in_a_message():
    with pytest.raises(ProviderError) as caught:
        await call(respond(401, json={"error": f"key {KEY} is not valid"}))
    assert KEY not in caught.value.message
    assert caught.value.message == "acedata: HTTP 401: key [redacted] is not valid"


async def test_an_accepted_status_is_returned():
    reply = await call(respond(404, json={"code": 404}), accept=(404,))
    assert reply.status == 404


async def test_redirects_are_not_followed():
    with pytest.raises(ProviderError) as caught:
        await call(respond(301, headers={"Location": "http://elsewhere.test/"}))
    assert (caught.value.retryable, caught.value.status) == (False, 301)
    assert "check the base URL" in caught.value.message


@pytest.mark.parametrize(
    "failure, words",
    [
        (httpx.ReadTimeout("slow"), "timed out"),
        (httpx.ConnectTimeout("slow"), "could not be reached (ConnectTimeout)"),
        (httpx.ConnectError("refused"), "could not be reached (ConnectError)"),
        (httpx.RemoteProtocolError("eof"), "could not be reached (RemoteProtocolError)"),
    ],
)
async def test_network_failures_are_retryable(failure: Exception, words: str):
    async def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(ProviderError) as caught:
        await call(handler)
    error = caught.value
    assert (error.retryable, error.status) == (True, None)
    assert error.message == f"acedata: {words}"


@pytest.mark.parametrize("base_url", ["ftp://files.test", "http://[::1"])
async def test_a_bad_base_url_is_final(base_url: str):
    # A real transport: it refuses the URL before any connection is tried.
    async with httpx.AsyncClient() as client:
        caller = ProviderHTTP(ProviderConfig("acedata", base_url, KEY), client, {})
        with pytest.raises(ProviderError) as caught:
            await caller.request("GET", "/")
    assert not caught.value.retryable
    assert "not a valid http(s) URL" in caught.value.message


async def test_answers_are_bounded():
    with pytest.raises(ProviderError) as caught:
        await call(respond(200, content=b"x" * 2048), limit=1024)
    assert not caught.value.retryable
    assert "more than" in caught.value.message

    async def streamed(request: httpx.Request) -> httpx.Response:
        async def chunks():
            for _ in range(8):
                yield b"y" * 512

        return httpx.Response(200, content=chunks())

    with pytest.raises(ProviderError) as caught:
        await call(streamed, limit=1024)
    assert not caught.value.retryable
    assert (await call(streamed, limit=4096)).content == b"y" * 4096


async def test_json_body_must_be_an_object():
    async with mock_client(respond(200, json=[1, 2])) as client:
        caller = ProviderHTTP(config("segmind"), client, {})
        with pytest.raises(ProviderError) as caught:
            await caller.json("GET", "/x")
    assert not caught.value.retryable
    assert caught.value.message.startswith("segmind: answered HTTP 200 with a body that is not")


def test_header_lookup_ignores_case():
    assert header({"X-Webhook-Timestamp": "1"}, "x-webhook-timestamp") == "1"
    assert header(httpx.Headers({"x-a": "2"}), "X-A") == "2"
    assert header({}, "X-A") is None


def test_image_helpers():
    png = make_png()
    encoded = base64.b64encode(png).decode()
    assert base64_output(encoded).data == png
    assert base64_output(f"data:image/png;base64,{encoded}").content_type == "image/png"
    with pytest.raises(ValueError):
        base64_output("not base64!")
    with pytest.raises(ValueError):
        base64_output(base64.b64encode(b"GIF89a....").decode())
    assert url_output("https://cdn.test/a/b.JPG?sig=1").content_type == "image/jpeg"
    assert url_output("https://cdn.test/a/b").content_type is None
    assert url_output("https://cdn.test/a/b.txt").content_type is None


@pytest.mark.parametrize(
    "failure, resend",
    [
        # The connection never opened: not one byte of the submit left.
        (httpx.ConnectError("refused or no such host"), Resend.SAFE),
        (httpx.ConnectTimeout("slow to connect"), Resend.SAFE),
        (httpx.PoolTimeout("no free connection"), Resend.SAFE),
        # Some or all of it went out: the provider may have accepted it.
        (httpx.WriteError("broken pipe"), Resend.UNKNOWN),
        (httpx.WriteTimeout("slow to send"), Resend.UNKNOWN),
        (httpx.ReadTimeout("slow to answer"), Resend.UNKNOWN),
        (httpx.ReadError("reset"), Resend.UNKNOWN),
        (httpx.RemoteProtocolError("eof"), Resend.UNKNOWN),
    ],
)
async def test_a_submit_is_classified_by_how_far_it_got(failure: Exception, resend: Resend):
    async def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(ProviderError) as caught:
        await call(handler, submit=True)
    assert caught.value.resend is resend
    expected = (
        ErrorCode.PROVIDER_UNAVAILABLE if resend is Resend.SAFE else ErrorCode.OUTCOME_UNKNOWN
    )
    assert caught.value.code is expected


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_submits_5xx_is_unknown_unless_the_adapter_says_unbilled(status: int):
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": "down"})

    with pytest.raises(ProviderError) as caught:
        await call(handler, submit=True)
    assert caught.value.resend is Resend.UNKNOWN
    # The same answer to a poll (which bills nothing) is safe to repeat.
    with pytest.raises(ProviderError) as caught:
        await call(handler)
    assert caught.value.resend is Resend.SAFE
