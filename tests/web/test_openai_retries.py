"""POST /v1/images/edits and the official `openai` SDK with its default retries (two, on
408, 409, 429, 5xx and timeouts): a call that fails makes exactly one task and one
provider submission, counted in the store and in the sandbox's fault queue (each submit
takes one queued fault); an Idempotency-Key repeat makes nothing; the answer describes
the image produced."""

from __future__ import annotations

import asyncio
import base64
import dataclasses

import httpx
import openai
import orjson
import pytest

from hub.store.base import TaskRecord
from hub.web.routes import openai_answer
from tests.helpers import (
    AUTH,
    FAST_SANDBOX,
    KEY,
    live_hub,
    make_png,
    open_image,
    png_file,
    query_store,
    until,
)


@pytest.fixture
def sandbox_settings(sandbox_settings):
    return sandbox_settings.replace(openai_wait_seconds=2.0)


@pytest.fixture
async def sdk(hub):
    """The SDK as users have it: default retries, default timeout."""
    async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=KEY) as c:
        yield c


async def task_count(hub) -> int:
    return int((await query_store(hub.state.store, "SELECT count(*) FROM tasks"))[0])


async def queue_faults(http, hub, kind: str, count: int = 3) -> None:
    url = f"{hub.url}/sandbox/acedata/_sandbox/faults"
    assert (await http.post(url, json={"kind": kind, "count": count})).is_success


async def faults_left(http, hub) -> int:
    pending = (await http.get(f"{hub.url}/sandbox/acedata/_sandbox/faults")).json()
    runs = pending["pending"] if isinstance(pending, dict) else pending
    return sum(run["count"] for run in runs)


async def test_a_provider_failure_is_one_task_and_one_submission(hub, sdk, http):
    await queue_faults(http, hub, "fail")
    with pytest.raises(openai.APIStatusError) as failed:
        await sdk.images.edit(image=png_file(), prompt="p", extra_body={"provider": "acedata"})
    assert failed.value.status_code == 502
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert failed.value.body["code"] == "provider_failed"  # type: ignore[index]
    assert await task_count(hub) == 1
    assert await faults_left(http, hub) == 2  # one submission reached the provider


async def test_a_wait_past_the_deadline_is_an_openai_504_and_one_task(hub, sdk, http):
    await queue_faults(http, hub, "stall")
    with pytest.raises(openai.APIStatusError) as late:
        await sdk.images.edit(image=png_file(), prompt="p", extra_body={"provider": "acedata"})
    assert late.value.status_code == 504
    assert late.value.response.headers["x-should-retry"] == "false"
    body = late.value.body
    assert body["code"] == "timeout" and body["type"] == "server_error"  # type: ignore[index]
    (row,) = [await query_store(hub.state.store, "SELECT id FROM tasks")]
    assert row[0] in body["message"]  # type: ignore[index]
    assert await task_count(hub) == 1
    assert await faults_left(http, hub) == 2


async def test_the_wait_ends_before_the_clients_own_timeout(make_settings, http):
    """An SDK with a 3 s timeout would give up and retry (a new task): the hub reads its
    x-stainless-read-timeout and answers first."""
    settings = make_settings(sandbox=True, extra_env=FAST_SANDBOX)  # the default wait, 540 s
    async with live_hub(settings) as hub:
        await queue_faults(http, hub, "stall")
        async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=KEY, timeout=3.0) as sdk:
            with pytest.raises(openai.APIStatusError) as late:
                await sdk.images.edit(image=png_file(), prompt="p")
        assert late.value.status_code == 504
        assert await task_count(hub) == 1
        assert await faults_left(http, hub) == 2


async def test_a_repeat_with_the_same_idempotency_key_makes_nothing(hub, sdk):
    key = {"Idempotency-Key": "edit-1"}
    first = await sdk.images.with_raw_response.edit(
        image=png_file(), prompt="make it blue", extra_headers=key
    )
    again = await sdk.images.with_raw_response.edit(
        image=png_file(), prompt="make it blue", extra_headers=key
    )
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.http_response.content == first.http_response.content
    assert again.parse().data[0].b64_json == first.parse().data[0].b64_json
    assert await task_count(hub) == 1
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        await sdk.images.edit(image=png_file(), prompt="another", extra_headers=key)
    assert reused.value.body["code"] == "idempotency_key_reused"  # type: ignore[index]
    assert await task_count(hub) == 1


async def test_a_repeat_while_the_first_waits_waits_for_the_same_task(hub, http):
    await queue_faults(http, hub, "stall", 2)
    form = {"prompt": "p", "provider": "acedata"}
    headers = {**AUTH, "idempotency-key": "same"}

    async def post() -> httpx.Response:
        files = {"image": ("in.png", make_png(), "image/png")}
        url = f"{hub.url}/v1/images/edits"
        return await http.post(url, data=form, files=files, headers=headers)

    first = asyncio.create_task(post())

    async def made() -> bool:
        return await task_count(hub) == 1

    await until(made, timeout=10)  # the first made its task
    second = await post()
    answered = await first
    assert answered.status_code == second.status_code == 504
    assert second.headers["idempotent-replayed"] == "true"
    assert await task_count(hub) == 1
    assert await faults_left(http, hub) == 1


async def test_the_answer_describes_the_image_produced(hub, sdk):
    # Eachlabs has no output_format: the image comes back as PNG, whatever was asked.
    result = await sdk.images.edit(
        image=png_file(), prompt="p", size="1024x1536", output_format="webp",
        extra_body={"provider": "eachlabs"},
    )  # fmt: skip
    image = open_image(base64.b64decode(result.data[0].b64_json or ""))
    assert result.size == f"{image.width}x{image.height}"
    assert result.output_format == image.format.lower() == "png"  # type: ignore[union-attr]
    assert result.background == "opaque"
    assert result.usage is not None and result.usage.total_tokens == 0
    cut_out = await sdk.images.edit(
        image=png_file(), prompt="p", background="transparent", output_format="png",
        quality="high", extra_body={"provider": "acedata"},
    )  # fmt: skip
    alpha = open_image(base64.b64decode(cut_out.data[0].b64_json or "")).getchannel("A")
    low, _ = alpha.getextrema()
    assert isinstance(low, int) and low < 255
    assert cut_out.background == "transparent" and cut_out.quality == "high"


async def test_output_compression_reaches_the_tasks_input(hub, sdk):
    await sdk.images.edit(
        image=png_file(), prompt="p", output_format="jpeg", output_compression=40,
        extra_body={"provider": "acedata"},
    )  # fmt: skip
    (stored,) = await hub.state.store.list_tasks(
        (await query_store(hub.state.store, "SELECT owner FROM tasks"))[0], 5
    )
    assert orjson.loads(stored.input)["output_compression"] == 40


async def test_a_bad_idempotency_key_is_a_400_naming_it(hub, sdk):
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.images.edit(
            image=png_file(), prompt="p", extra_headers={"Idempotency-Key": "x" * 256}
        )
    assert bad.value.body["param"] == "Idempotency-Key"  # type: ignore[index]
    assert await task_count(hub) == 0


@dataclasses.dataclass(frozen=True, slots=True)
class CodedTask(TaskRecord):
    """A task with its error code, as the engine keeps it."""

    error_code: str | None = None


async def test_a_content_refusal_is_openais_400_moderation_blocked(hub):
    task = CodedTask(
        id="task_x", owner="o", provider="acedata", status="failed",  # type: ignore[arg-type]
        input=b"{}", channel_id=None, provider_task_id=None, callback_secret=None,
        outputs=b"[]", result=None, error="acedata: the content was refused", attempts=1,
        next_at=None, deadline=0.0, created_at=0.0, updated_at=0.0,
        error_code="moderation_blocked",
    )  # fmt: skip
    answer = await openai_answer.ended(hub.state, task)
    assert answer.status == 400
    assert orjson.loads(answer.body) == {
        "error": {
            "message": "acedata: the content was refused",
            "type": "image_generation_user_error",
            "param": None,
            "code": "moderation_blocked",
        }
    }


async def test_a_failed_edit_repeated_with_its_key_is_the_same_failure(hub, sdk, http):
    await queue_faults(http, hub, "fail")
    key = {"Idempotency-Key": "failed-once"}
    answers = []
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as failed:
            await sdk.images.edit(image=png_file(), prompt="p", extra_headers=key)
        answers.append(failed.value.response)
    assert answers[0].status_code == answers[1].status_code == 502
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert answers[1].content == answers[0].content
    assert await task_count(hub) == 1
    assert await faults_left(http, hub) == 2


async def test_a_kept_answer_is_replayed_after_a_restart(sandbox_settings, http):
    key = {"Idempotency-Key": "across-restarts"}
    answers = []
    for run in range(2):
        async with live_hub(sandbox_settings) as hub:
            if run == 0:
                await queue_faults(http, hub, "fail", 1)
            async with openai.AsyncOpenAI(base_url=f"{hub.url}/v1", api_key=KEY) as sdk:
                with pytest.raises(openai.APIStatusError) as failed:
                    await sdk.images.edit(image=png_file(), prompt="p", extra_headers=key)
            answers.append(failed.value.response)
            count = await task_count(hub)
    assert answers[0].status_code == answers[1].status_code == 502
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert answers[1].content == answers[0].content
    assert count == 1
