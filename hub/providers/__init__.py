"""Provider adapters, one module each, and the defaults the hub configures them with.

``PROVIDERS`` maps a provider name to its factory ``(config, client) -> Provider``. The
tables below hold what each provider's documents say (base URL, published limits) and
timings that suit its delivery style; ``hub.providers.config`` builds each provider's
``ProviderConfig`` from them and the ``HUB_<PROVIDER>_*`` settings.
"""

from __future__ import annotations

from hub.providers.acedata import AceData
from hub.providers.atlascloud import AtlasCloud
from hub.providers.base import ProviderFactory
from hub.providers.eachlabs import Eachlabs
from hub.providers.segmind import Segmind

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_POLLING",
    "DEFAULT_TIMEOUTS",
    "DEFAULT_URLS",
    "PROVIDERS",
    "SANDBOX_LIMITS",
]

PROVIDERS: dict[str, ProviderFactory] = {
    "acedata": AceData,
    "eachlabs": Eachlabs,
    "atlascloud": AtlasCloud,
    "segmind": Segmind,
}

DEFAULT_URLS: dict[str, str] = {
    "acedata": "https://api.acedata.cloud",
    "eachlabs": "https://api.eachlabs.ai",
    "atlascloud": "https://api.atlascloud.ai",
    "segmind": "https://api.segmind.com",
}

# (requests per minute, requests at once); 0 = no limit. Eachlabs publishes 60/min and
# 10 in flight; Segmind's free plan allows 5/min (Pro: 50, set HUB_SEGMIND_RATE_PER_MINUTE).
# AceData and AtlasCloud publish none.
DEFAULT_LIMITS: dict[str, tuple[int, int]] = {
    "acedata": (0, 0),
    "eachlabs": (60, 10),
    "atlascloud": (0, 0),
    "segmind": (5, 0),
}

# With --sandbox the limits are the emulators': Eachlabs' are enforced there as published;
# Segmind's plan limit is off there by default (HUB_SANDBOX_SEGMIND_RATE_LIMIT), so demos
# and tests are not held to the free plan's 5 a minute.
SANDBOX_LIMITS: dict[str, tuple[int, int]] = {**DEFAULT_LIMITS, "segmind": (0, 0)}

# (first_poll_after, poll_interval) in seconds. AceData delivers by callback (a task
# takes ~30 s), so its lookup is only a late safety net; Eachlabs sends a webhook after
# ~40 s and is polled as the fallback; AtlasCloud is polled every ~3 s as its docs
# advise; Segmind answers synchronously and is never polled.
DEFAULT_POLLING: dict[str, tuple[float, float]] = {
    "acedata": (60.0, 10.0),
    "eachlabs": (45.0, 5.0),
    "atlascloud": (3.0, 3.0),
    "segmind": (3.0, 3.0),
}

# Seconds one HTTP call may take. Segmind's v1 answer comes after ~58 s (more under
# load); AceData without a callback holds the request for the whole edit too.
DEFAULT_TIMEOUTS: dict[str, float] = {
    "acedata": 120.0,
    "eachlabs": 60.0,
    "atlascloud": 60.0,
    "segmind": 180.0,
}
