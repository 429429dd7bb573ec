"""Every adapter's failure classification, over real loopback HTTP: a server that reads
the whole submit and then answers, hangs, closes or cuts its answer. The Resend class of
each case is the one the adapter's docstring table gives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from hub.providers import PROVIDERS
from hub.providers.base import (
    EditRequest,
    ErrorCode,
    Provider,
    ProviderConfig,
    ProviderError,
    Resend,
)

from .helpers import KEY, static_image
from .rawserver import Answer, Behaviour, Close, Cut, Hang, RawServer, closed_port, raw_server

SUBMIT_PATH = {
    "acedata": "/v1/images/edits",
    "eachlabs": "/v1/prediction",
    "atlascloud": "/api/v1/model/generateImage",
    "segmind": "/v1/gpt-image-1-edit",
}
POLL = {
    "acedata": ("/openai/tasks", "t1"),
    "eachlabs": ("/v1/prediction/p1", "p1"),
    "atlascloud": ("/api/v1/model/prediction/p1", "p1"),
}
ACCEPTED = {
    "acedata": b'{"task_id": "t1"}',
    "eachlabs": b'{"status": "success", "message": "ok", "predictionID": "p1"}',
    "atlascloud": b'{"code": 200, "data": {"id": "p1", "status": "starting"}}',
}
UPLOADED = b'{"code": 200, "data": {"download_url": "https://files.example.com/u/a.png"}}'
TIMEOUT = 0.5


def request() -> EditRequest:
    return EditRequest(
        task_id="task-1",
        prompt="add a hat",
        images=(static_image(),),
        callback_url="https://hub.example.com/callbacks/token",
        callback_secret="whsec",
    )


@asynccontextmanager
async def adapter(name: str, url: str) -> AsyncIterator[Provider]:
    # A real client with keep-alive, as the hub's own is.
    async with httpx.AsyncClient() as client:
        settings = ProviderConfig(name, url, KEY, request_timeout=TIMEOUT)
        yield PROVIDERS[name](settings, client)


async def submit_error(name: str, behaviour: Behaviour) -> tuple[ProviderError, RawServer]:
    async with raw_server() as server:
        server.on("/api/v1/model/uploadMedia", Answer(200, UPLOADED))
        server.on(SUBMIT_PATH[name], behaviour)
        async with adapter(name, server.url) as provider:
            with pytest.raises(ProviderError) as caught:
                await provider.submit(request())
        assert [seen.path for seen in server.seen].count(SUBMIT_PATH[name]) == 1
        return caught.value, server


ALL = sorted(PROVIDERS)
ERROR = b'{"error": "nope"}'


@pytest.mark.parametrize("name", ALL)
async def test_connection_refused_is_safe(name: str):
    async with adapter(name, f"http://127.0.0.1:{closed_port()}") as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.submit(request())
    assert caught.value.resend is Resend.SAFE
    assert caught.value.code is ErrorCode.PROVIDER_UNAVAILABLE


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "behaviour",
    [Hang(), Close(), Cut()],
    ids=["read-timeout-after-body", "closed-before-answer", "cut-mid-answer"],
)
async def test_sent_then_no_answer_is_unknown(name: str, behaviour: Behaviour):
    error, _ = await submit_error(name, behaviour)
    assert error.resend is Resend.UNKNOWN
    assert error.code is ErrorCode.OUTCOME_UNKNOWN
    assert "may have" in error.message and "charged" in error.message


@pytest.mark.parametrize("name", ALL)
async def test_unreadable_2xx_is_unknown(name: str):
    error, _ = await submit_error(
        name, Answer(200, b"<html>ok</html>", (("Content-Type", "text/html"),))
    )
    assert error.resend is Resend.UNKNOWN


@pytest.mark.parametrize("name", ALL)
async def test_429_is_safe(name: str):
    error, _ = await submit_error(
        name, Answer(429, b'{"error": "too many"}', (("Retry-After", "7"),))
    )
    assert error.resend is Resend.SAFE
    assert error.code is ErrorCode.RATE_LIMITED
    assert error.retry_after == 7.0
    assert not error.slot_full


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("status", [400, 401, 402, 403])
async def test_refusals_are_never(name: str, status: int):
    error, _ = await submit_error(name, Answer(status, ERROR))
    assert error.resend is Resend.NEVER
    assert error.code is ErrorCode.PROVIDER_REFUSED


@pytest.mark.parametrize(
    "name, status, body, expected",
    [
        (
            "acedata",
            500,
            b'{"success": false, "error": {"code": "api_error", "message": "fetch failed"}, "trace_id": "tr-1"}',
            Resend.UNKNOWN,
        ),
        ("acedata", 502, ERROR, Resend.UNKNOWN),
        ("acedata", 504, ERROR, Resend.UNKNOWN),
        ("eachlabs", 500, b'{"error": "Failed to create prediction"}', Resend.SAFE),
        ("eachlabs", 500, ERROR, Resend.UNKNOWN),
        ("eachlabs", 503, ERROR, Resend.UNKNOWN),
        ("atlascloud", 500, ERROR, Resend.UNKNOWN),
        ("atlascloud", 503, ERROR, Resend.UNKNOWN),
        ("segmind", 500, ERROR, Resend.SAFE),
        ("segmind", 502, ERROR, Resend.SAFE),
        ("segmind", 504, ERROR, Resend.UNKNOWN),
    ],
)
async def test_server_errors_per_provider(name: str, status: int, body: bytes, expected: Resend):
    error, _ = await submit_error(name, Answer(status, body))
    assert error.resend is expected
    assert error.status == status
    wanted = (
        ErrorCode.OUTCOME_UNKNOWN if expected is Resend.UNKNOWN else ErrorCode.PROVIDER_UNAVAILABLE
    )
    assert error.code is wanted


async def test_acedata_500_keeps_the_trace_id_as_a_lookup_handle():
    body = b'{"success": false, "error": {"code": "api_error", "message": "x"}, "trace_id": "tr-1"}'
    error, _ = await submit_error("acedata", Answer(500, body))
    assert error.provider_task_id == "trace:tr-1"
    async with raw_server() as server:
        found = b'{"id": "t1", "trace_id": "tr-1", "response": {"success": true, "data": []}}'
        server.on("/openai/tasks", Answer(200, found))
        async with adapter("acedata", server.url) as provider:
            outcome = await provider.poll("trace:tr-1")
        assert server.seen[0].body == b'{"action":"retrieve","trace_id":"tr-1"}'
    assert outcome.state == "failed"  # found, answered with no images


async def test_acedata_moderation_is_never_with_its_code():
    body = b'{"success": false, "error": {"code": "forbidden", "message": "blocked"}}'
    error, _ = await submit_error("acedata", Answer(403, body))
    assert error.resend is Resend.NEVER
    assert error.code is ErrorCode.MODERATION_BLOCKED


async def test_eachlabs_in_flight_cap_is_a_full_slot():
    body = b'{"error": "Too many predictions in progress"}'
    error, _ = await submit_error("eachlabs", Answer(429, body))
    assert (error.resend, error.slot_full, error.retry_after) == (Resend.SAFE, True, None)


async def test_eachlabs_rate_limit_message_gives_the_wait():
    body = b'{"error": "Rate limit exceeded. Please retry after 60 seconds."}'
    error, _ = await submit_error("eachlabs", Answer(429, body))
    assert (error.resend, error.slot_full, error.retry_after) == (Resend.SAFE, False, 60.0)


@pytest.mark.parametrize("name", sorted(POLL))
async def test_submit_never_reuses_a_kept_alive_connection(name: str):
    path, task = POLL[name]
    async with raw_server() as server:
        server.on(path, Answer(200, b'{"status": "processing"}'))
        server.on("/api/v1/model/uploadMedia", Answer(200, UPLOADED))
        server.on(SUBMIT_PATH[name], Answer(200, ACCEPTED[name]))
        async with adapter(name, server.url) as provider:
            await provider.poll(task, age=0.0)
            await provider.poll(task, age=0.0)
            await provider.submit(request())
            await provider.submit(request())
        by_path = [(seen.path, seen.connection) for seen in server.seen]
    polls = [connection for seen_path, connection in by_path if seen_path == path]
    submits = [connection for seen_path, connection in by_path if seen_path == SUBMIT_PATH[name]]
    assert len(set(polls)) == 1  # polls do keep their connection alive
    assert len(submits) == 2 and len(set(submits)) == 2
    assert not set(submits) & set(polls)
    others = [
        connection
        for seen_path, connection in by_path
        if seen_path not in (path, SUBMIT_PATH[name])
    ]
    assert not set(submits) & set(others)


@pytest.mark.parametrize("name", sorted(POLL))
async def test_poll_failures_are_safe_to_repeat(name: str):
    path, task = POLL[name]
    for behaviour in (Close(), Hang(), Answer(502, ERROR)):
        async with raw_server() as server:
            server.on(path, behaviour)
            async with adapter(name, server.url) as provider:
                with pytest.raises(ProviderError) as caught:
                    await provider.poll(task, age=0.0)
        assert caught.value.resend is Resend.SAFE, behaviour
