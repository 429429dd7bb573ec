"""Each provider's settings: ``HUB_<PROVIDER>_URL`` and ``_API_KEY``, its limits and polling
cadence, defaulting to the real service (or to the in-process sandbox with ``--sandbox``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from hub.config.env import invalid, load, setting
from hub.config.settings import Settings
from hub.providers import (
    DEFAULT_LIMITS,
    DEFAULT_POLLING,
    DEFAULT_TIMEOUTS,
    DEFAULT_URLS,
    SANDBOX_LIMITS,
)
from hub.providers.base import ProviderConfig

# The key the providers send to the in-process sandbox: HUB_SANDBOX_KEY, which
# ``hub serve --sandbox`` fills from its data dir; "sandbox" where nothing set one (code
# and tests that build the app directly, whose sandbox then takes any key).
SANDBOX_KEY = "sandbox"
SANDBOX_KEY_VARIABLE = "HUB_SANDBOX_KEY"
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
        per_minute, concurrency = (SANDBOX_LIMITS if settings.sandbox else DEFAULT_LIMITS)[name]
        first_poll, interval = DEFAULT_POLLING[name]
        defaults = ProviderSettings(
            url=f"{settings.public_url}/sandbox/{name}" if settings.sandbox else default_url,
            api_key=(env.get(SANDBOX_KEY_VARIABLE) or SANDBOX_KEY) if settings.sandbox else "",
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
    default = names(settings.default_provider)
    if settings.default_provider and not any(name in configs for name in default):
        choices = ", ".join(configs) or "none is configured: set HUB_<PROVIDER>_API_KEY"
        raise invalid(
            "HUB_DEFAULT_PROVIDER", repr(settings.default_provider),
            f"a configured provider, or several comma-separated ({choices})",
        )  # fmt: skip
    unknown = [name for name in default if name not in DEFAULT_URLS]
    if unknown or len(set(default)) < len(default):
        raise invalid(
            "HUB_DEFAULT_PROVIDER", repr(settings.default_provider),
            f"providers named once each, of {', '.join(DEFAULT_URLS)}",
        )  # fmt: skip
    return configs


def names(value: str) -> list[str]:
    """Provider names as a setting or a form field lists them: comma-separated, in order."""
    return [name.strip() for name in value.split(",") if name.strip()]


def public_url_warning(public_url: str, configs: dict[str, ProviderConfig]) -> str | None:
    """One line for the log when a real provider is configured but ``public_url`` is an
    address it cannot reach (loopback, private, link-local): every provider downloads the
    input images from the hub's signed URLs there, and those with callbacks post results
    to it. None when all is well, or when every provider is an emulator on this network."""
    if _reachable(public_url):
        return None
    real = sorted(name for name, config in configs.items() if _reachable(config.base_url))
    if not real:
        return None
    return (
        f"HUB_PUBLIC_URL {public_url} is a loopback or private address, but {', '.join(real)}"
        f" {'is a real provider' if len(real) == 1 else 'are real providers'}: they fetch"
        " input images from it and send results to it, and cannot reach it. Set"
        " HUB_PUBLIC_URL to the hub's public https address (README: Going live)."
    )


def _reachable(url: str) -> bool:
    """Whether ``url``'s host looks reachable from the internet (judged without DNS)."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if not host or host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." in host
    return address.is_global
