"""How long to wait before trying an outbound call again: exponential, with jitter, never
sooner than the other side asked."""

from __future__ import annotations

import random

# The hub's own generator, not the random module's shared one: jitter needs no seed, and
# a test tool that watches the shared generator (hypothesis) must not see the hub use it.
_jitter = random.Random()


def backoff(
    attempt: int, retry_after: float | None = None, base: float = 1.0, cap: float = 60.0
) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): exponential with jitter, never sooner
    than the provider's ``Retry-After``."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay = ceiling / 2 + _jitter.uniform(0, ceiling / 2)
    return float(max(delay, retry_after or 0.0))
