"""Rate limits per API key and per callback URL: a token bucket each, so a flood on one key
or one URL is answered 429 (with ``Retry-After``) and never slows another."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from hub.errors import RateLimited

# Buckets kept at most; the least recently used goes first (a full bucket is the same as
# none, so forgetting an idle one changes nothing).
MAX_BUCKETS = 100_000


class RateLimit:
    """At most ``rate`` requests a second per key, in bursts of up to ``rate`` (one second's
    worth). ``rate`` 0 turns it off."""

    def __init__(
        self,
        rate: float,
        what: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self._rate = rate
        self._burst = max(1.0, rate)
        self._what = what
        self._clock = clock
        self._max = max_buckets
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def check(self, key: Hashable) -> None:
        """Take one request from ``key``'s bucket, or raise RateLimited saying when to come back."""
        if self._rate <= 0:
            return
        now = self._clock()
        tokens, then = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - then) * self._rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1 - tokens) / self._rate)
            raise RateLimited(
                "rate_limited",
                f"more than {self._rate:g} requests a second for this {self._what}",
                retry_after=wait,
            )
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
