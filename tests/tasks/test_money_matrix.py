"""Money, for every fault the sandbox can inject on every provider: one task meets the
fault, runs to its end, and the provider's ledger shows at most one billed job for it.
A second billed job for one task is a second bill, as bad as a lost callback."""

import asyncio

import pytest

from hub.sandbox.faults import FaultKind
from tests.helpers import until
from tests.tasks.test_faults import finish, hub_with, submit

pytestmark = pytest.mark.slow

PROVIDERS = ("acedata", "eachlabs", "atlascloud", "segmind")
# The provider took the job and the hub cannot know: billed once, never sent again.
AMBIGUOUS = (FaultKind.HANG, FaultKind.RESET_AFTER_ACCEPT)

# Short waits, so every fault ends the task within seconds: the request timeout that a
# hang outlasts, the grace for a callback after an unknown outcome, the deadline a stall
# meets, and polls soon after a lost callback.
QUICK = (
    *(
        (f"HUB_{provider.upper()}_{name}", value)
        for provider in PROVIDERS
        for name, value in (("REQUEST_TIMEOUT", "0.5"), ("FIRST_POLL_AFTER", "0.2"),
                            ("POLL_INTERVAL", "0.1"))
    ),
    ("HUB_TASK_UNKNOWN_GRACE_SECONDS", "2"),
    ("HUB_SANDBOX_HANG_SECONDS", "1"),
)  # fmt: skip


async def ledger(http, hub, provider: str) -> dict[str, bool]:
    answer = await http.get(f"{hub.url}/sandbox/{provider}/_sandbox/ledger")
    assert answer.status_code == 200, answer.text
    return {job["id"]: job["billed"] for job in answer.json()["jobs"]}


async def each_fault(http, hub, provider: str) -> list[tuple[str, str, int]]:
    """Each fault in turn on one provider: (fault, how the task ended, jobs billed)."""
    faults = f"{hub.url}/sandbox/{provider}/_sandbox/faults"
    seen: list[tuple[str, str, int]] = []
    for kind in FaultKind:
        queued = await http.post(faults, json={"kind": kind.value})
        if queued.status_code != 201:  # a fault this provider cannot have
            continue
        before = await ledger(http, hub, provider)
        task = await submit(http, hub, provider)
        _, _, record = await finish(http, hub, task)

        async def billed_now(before: dict[str, bool] = before) -> int:
            after = await ledger(http, hub, provider)
            return sum(1 for job, paid in after.items() if paid and job not in before)

        if kind in AMBIGUOUS:
            # The job was accepted, and is billed (for Segmind once its 200 completes, after
            # the hub stopped waiting): wait for that bill to show.
            async def shown() -> bool:
                return await billed_now() >= 1

            await until(shown, timeout=10, every=0.05)
        billed = await billed_now()
        seen.append((kind.value, record["status"], billed))
        await http.delete(faults)  # a fault this task did not consume must not reach the next
    return seen


async def test_no_fault_on_any_provider_bills_a_task_twice(make_settings, http):
    async with hub_with(make_settings, *QUICK, task_timeout_seconds=4) as hub:
        results = await asyncio.gather(*(each_fault(http, hub, p) for p in PROVIDERS))
    table = dict(zip(PROVIDERS, results, strict=True))
    print("\nprovider    fault                     ended       billed jobs")
    for provider, rows in table.items():
        for kind, status, billed in rows:
            print(f"{provider:<11} {kind:<25} {status:<11} {billed}")
    for provider, rows in table.items():
        assert len(rows) >= 5, (provider, rows)  # the submit and job faults, at least
        for kind, status, billed in rows:
            assert billed <= 1, (provider, kind, status, billed)
            if kind in ("429", "500") and status == "succeeded":
                assert billed == 1, (provider, kind)
