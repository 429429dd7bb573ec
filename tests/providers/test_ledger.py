"""Money through the real emulators over loopback HTTP: what each adapter says of a
failure against what the emulator's ledger says it would bill.

For every provider, ``hang`` (the answer held past the client's timeout, the job billed
and completed anyway) and ``reset_after_accept`` (the job created, the connection cut
before the answer) end in an UNKNOWN error, never SAFE, and the ledger shows exactly one
billed job. A 429 bills nothing and is SAFE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from hub.providers import PROVIDERS
from hub.providers.base import (
    EditRequest,
    InputImage,
    Provider,
    ProviderConfig,
    ProviderError,
    Resend,
)
from hub.sandbox.app import SandboxSettings, create_sandbox_app
from tests.helpers import until
from tests.sandbox.test_live import Receiver, serve

KEY = "sbx_ledger-test-key"
SETTINGS = SandboxSettings(
    latency=0.05,
    allow_insecure_webhooks=True,
    callback_retry_delay=0,
    hang_seconds=5,
    api_key=KEY,
)
TIMEOUT = 0.5
ALL = sorted(PROVIDERS)


@dataclass
class Live:
    http: httpx.AsyncClient
    sandbox: str
    receiver: str

    def provider(self, name: str) -> Provider:
        config = ProviderConfig(name, f"{self.sandbox}/{name}", KEY, request_timeout=TIMEOUT)
        return PROVIDERS[name](config, self.http)

    def request(self) -> EditRequest:
        receiver = Receiver()

        async def load() -> bytes:
            return receiver.image

        image = InputImage("b1", "image/png", "image-1.png", f"{self.receiver}/input.png", load)
        return EditRequest("task-1", "add a hat", (image,), callback_url=f"{self.receiver}/hooks/x")

    async def fault(self, name: str, kind: str) -> None:
        answer = await self.http.post(f"{self.sandbox}/{name}/_sandbox/faults", json={"kind": kind})
        assert answer.status_code == 201

    async def ledger(self, name: str) -> list[dict[str, object]]:
        answer = await self.http.get(f"{self.sandbox}/{name}/_sandbox/ledger")
        jobs: list[dict[str, object]] = answer.json()["jobs"]
        return jobs


@pytest.fixture
async def live() -> AsyncIterator[Live]:
    receiver = Receiver()
    async with (
        serve(receiver.app) as receiver_url,
        serve(create_sandbox_app(SETTINGS)) as sandbox_url,
        httpx.AsyncClient() as http,
    ):
        yield Live(http, sandbox_url, receiver_url)


async def billed(live: Live, name: str) -> list[dict[str, object]]:
    return [job for job in await live.ledger(name) if job["billed"]]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", ["hang", "reset_after_accept"])
async def test_an_accepted_job_without_an_answer_is_unknown_and_billed_once(
    live: Live, name: str, kind: str
):
    await live.fault(name, kind)
    provider = live.provider(name)
    with pytest.raises(ProviderError) as caught:
        await provider.submit(live.request())
    assert caught.value.resend is Resend.UNKNOWN, caught.value.message

    async def one_billed() -> bool:
        return len(await billed(live, name)) == 1

    # Segmind bills when its edit completes, a moment after the hub stopped waiting.
    await until(one_billed, timeout=10)
    jobs = await live.ledger(name)
    assert len(jobs) == 1 and set(jobs[0]) == {"id", "billed", "at", "cost_usd"}


@pytest.mark.parametrize("name", ALL)
async def test_a_429_bills_nothing_and_is_safe(live: Live, name: str):
    await live.fault(name, "429")
    with pytest.raises(ProviderError) as caught:
        await live.provider(name).submit(live.request())
    assert caught.value.resend is Resend.SAFE
    assert await live.ledger(name) == []


@pytest.mark.parametrize("name", ALL)
async def test_a_completed_job_is_billed_once(live: Live, name: str):
    outcome = await live.provider(name).submit(live.request())
    assert outcome.state in ("pending", "succeeded")
    jobs = await live.ledger(name)
    assert [job["billed"] for job in jobs] == [True]
    if outcome.provider_task_id is not None and name != "acedata":
        assert jobs[0]["id"] == outcome.provider_task_id


async def test_segmind_bills_only_a_200(live: Live):
    await live.fault("segmind", "fail")  # 406 "Insufficient credits" after the work
    with pytest.raises(ProviderError) as caught:
        await live.provider("segmind").submit(live.request())
    assert caught.value.resend is Resend.NEVER
    assert [job["billed"] for job in await live.ledger("segmind")] == [False]


async def test_the_ledger_is_open_and_holds_no_tenant_data(live: Live):
    await live.provider("eachlabs").submit(live.request())
    answer = await live.http.get(f"{live.sandbox}/eachlabs/_sandbox/ledger")  # no key
    assert answer.status_code == 200
    assert live.receiver not in answer.text and "add a hat" not in answer.text
