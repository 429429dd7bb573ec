"""The backoff between submit attempts. (The providers' own limits are counted in the
store, shared by replicas: tests/store/test_task_limits.py, tests/tasks/test_replica_limits.py.)"""

from hub.net.backoff import backoff


def test_backoff_grows_with_jitter_and_honours_retry_after():
    for attempt in range(1, 10):
        ceiling = min(60.0, 2 ** (attempt - 1))
        delay = backoff(attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert backoff(1, retry_after=30) == 30
    assert backoff(10, retry_after=5) >= 30
