import asyncio

from hub.net.backoff import backoff
from hub.tasks.limits import Limiter


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_no_more_than_per_minute_calls_start_in_any_minute():
    time = FakeTime()
    limiter = Limiter(per_minute=60, clock=time.clock, sleep=time.sleep)
    starts = []
    for _ in range(150):
        async with limiter.slot():
            starts.append(time.now)
    # Any 60 consecutive starts span a minute or more; the first 60 go at once.
    assert starts[59] == starts[0]
    assert all(starts[i + 60] - starts[i] >= 60 for i in range(len(starts) - 60))


async def test_no_more_than_concurrency_calls_at_once():
    limiter = Limiter(concurrency=10)
    running = peak = 0
    release = asyncio.Event()

    async def call():
        nonlocal running, peak
        async with limiter.slot():
            running += 1
            peak = max(peak, running)
            await release.wait()
            running -= 1

    calls = [asyncio.create_task(call()) for _ in range(25)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert running == 10
    release.set()
    await asyncio.gather(*calls)
    assert peak == 10


async def test_no_limits_means_no_waiting():
    limiter = Limiter()
    for _ in range(1000):
        async with limiter.slot():
            pass


def test_backoff_grows_with_jitter_and_honours_retry_after():
    for attempt in range(1, 10):
        ceiling = min(60.0, 2 ** (attempt - 1))
        delay = backoff(attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert backoff(1, retry_after=30) == 30
    assert backoff(10, retry_after=5) >= 30
