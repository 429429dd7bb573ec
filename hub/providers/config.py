"""Each provider's settings: ``HUB_<PROVIDER>_URL`` and ``_API_KEY``, its limits and polling
cadence, defaulting to the real service (or to the in-process sandbox with ``--sandbox``)."""

from __future__ import annotations

from typing import TypeVar

from hub.config.env import SettingsError
from hub.config.settings import Settings
from hub.providers import DEFAULT_LIMITS, DEFAULT_POLLING, DEFAULT_TIMEOUTS, DEFAULT_URLS
from hub.providers.base import ProviderConfig

SANDBOX_KEY = "sandbox"
N = TypeVar("N", int, float)


def provider_configs(settings: Settings) -> dict[str, ProviderConfig]:
    """The configured providers: those with an API key, or all of them in sandbox mode."""
    env = dict(settings.extra_env)
    configs = {}
    for name, default_url in DEFAULT_URLS.items():
        prefix = f"HUB_{name.upper()}_"
        api_key = env.get(prefix + "API_KEY", "")
        url = env.get(prefix + "URL", "")
        if settings.sandbox:
            url = url or f"{settings.public_url}/sandbox/{name}"
            api_key = api_key or SANDBOX_KEY
        if not api_key:
            continue
        per_minute, concurrency = DEFAULT_LIMITS[name]
        first_poll, interval = DEFAULT_POLLING[name]
        configs[name] = ProviderConfig(
            name=name,
            base_url=(url or default_url).rstrip("/"),
            api_key=api_key,
            requests_per_minute=_number(env, prefix + "RATE_PER_MINUTE", per_minute, int),
            concurrency=_number(env, prefix + "CONCURRENCY", concurrency, int),
            first_poll_after=_number(env, prefix + "FIRST_POLL_AFTER", first_poll, float),
            poll_interval=_number(env, prefix + "POLL_INTERVAL", interval, float),
            request_timeout=_number(env, prefix + "REQUEST_TIMEOUT", DEFAULT_TIMEOUTS[name], float),
        )
    return configs


def _number(env: dict[str, str], name: str, default: N, kind: type[N]) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}: cannot use {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name}: must not be negative")
    return value
