"""Each provider's settings: ``HUB_<PROVIDER>_URL`` and ``_API_KEY``, its limits and polling
cadence, defaulting to the real service (or to the in-process sandbox with ``--sandbox``)."""

from __future__ import annotations

from dataclasses import dataclass

from hub.config.env import invalid, load, setting
from hub.config.settings import Settings
from hub.providers import DEFAULT_LIMITS, DEFAULT_POLLING, DEFAULT_TIMEOUTS, DEFAULT_URLS
from hub.providers.base import ProviderConfig

SANDBOX_KEY = "sandbox"
NO_LIMIT = "0 = no limit"


@dataclass(frozen=True)
class ProviderSettings:
    """One provider's ``HUB_<PROVIDER>_*`` variables. The field defaults only hold a place:
    ``provider_configs`` starts each provider from its own (``hub.providers``)."""

    url: str = setting("", url=True)
    api_key: str = setting("", secret=True)
    rate_per_minute: int = setting(0, ge=0, note=NO_LIMIT)
    concurrency: int = setting(0, ge=0, note=NO_LIMIT)
    first_poll_after: float = setting(3.0, ge=0, duration=True)
    # Polled this often until it ends: 0 would poll without pause.
    poll_interval: float = setting(3.0, gt=0, duration=True)
    request_timeout: float = setting(120.0, gt=0, duration=True)
    # Empty: the hub's own. AtlasCloud's edge is said to want a browser-like one.
    user_agent: str = setting("")
    # How long after acceptance a poll's "no such job" still means "not visible yet".
    not_found_grace: float = setting(30.0, ge=0, duration=True)


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    """The configured providers: those with an API key, or all of them in sandbox mode.

    Every provider's variables are checked, configured or not: a bad value is refused at
    start rather than when someone adds the key.
    """
    env = dict(settings.extra_env)
    configs = {}
    for name, default_url in DEFAULT_URLS.items():
        per_minute, concurrency = DEFAULT_LIMITS[name]
        first_poll, interval = DEFAULT_POLLING[name]
        defaults = ProviderSettings(
            url=f"{settings.public_url}/sandbox/{name}" if settings.sandbox else default_url,
            api_key=SANDBOX_KEY if settings.sandbox else "",
            rate_per_minute=per_minute,
            concurrency=concurrency,
            first_poll_after=first_poll,
            poll_interval=interval,
            request_timeout=DEFAULT_TIMEOUTS[name],
        )
        own = load(ProviderSettings, env, f"HUB_{name.upper()}_", defaults)
        if not own.api_key:
            continue
        configs[name] = ProviderConfig(
            name=name,
            base_url=own.url.rstrip("/"),
            api_key=own.api_key,
            requests_per_minute=own.rate_per_minute,
            concurrency=own.concurrency,
            first_poll_after=own.first_poll_after,
            poll_interval=own.poll_interval,
            request_timeout=own.request_timeout,
            user_agent=own.user_agent,
            not_found_grace=own.not_found_grace,
        )
    default = settings.default_provider
    if default and default not in configs:
        choices = ", ".join(configs) or "none is configured: set HUB_<PROVIDER>_API_KEY"
        raise invalid("HUB_DEFAULT_PROVIDER", repr(default), f"a configured provider ({choices})")
    return configs
