"""The sandbox's settings: one frozen object, built in code or from ``HUB_SANDBOX_*``.

The first six fields are the interface the hub relies on. The rest are the switches
PROVIDERS.md §6 asks for where the providers' own documents disagree; their defaults
are the reading the fact sheet recommends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from hub.config.env import check, invalid, load, setting

ENV_PREFIX = "HUB_SANDBOX_"

EACHLABS_WEBHOOK_SHAPES = ("current", "legacy")
EACHLABS_AUTH_STYLES = ("both", "x-api-key", "bearer")
EACHLABS_SIGNING = ("plain", "hmac")
ACEDATA_OUTPUTS = ("b64_json", "url")
ATLAS_UPLOAD_SHAPES = ("official", "seed")
OFF = "0 = off"


@dataclass(frozen=True)
class SandboxSettings:
    """How the emulators behave. Times are in seconds; a limit of 0 switches it off."""

    latency: float = setting(2.0, ge=0, duration=True)
    warmup: float = setting(0.0, ge=0, duration=True)
    eachlabs_webhook_shape: str = setting("current", choices=EACHLABS_WEBHOOK_SHAPES)
    callback_retry_delay: float = setting(10.0, ge=0, duration=True)
    allow_insecure_webhooks: bool = setting(False)
    # The one key the emulators take (HUB_SANDBOX_KEY): the hub generates it for
    # ``--sandbox`` and ``hub sandbox`` makes one when unset. None (code and tests only)
    # takes any non-empty key, each key seeing only its own jobs. Kept out of repr.
    api_key: str | None = setting(None, secret=True, alias="HUB_SANDBOX_KEY")
    # How long "hang" holds an answer at most (the client's timeout is meant to come first).
    hang_seconds: float = setting(600.0, ge=0, duration=True)
    # Whether inputs and webhooks may point at loopback: the hub on this machine serves its
    # blobs and takes its callbacks there. Private, link-local and reserved ranges never.
    allow_loopback: bool = setting(True)
    # Which header Eachlabs accepts: its docs show X-API-Key in one place, Bearer in another.
    eachlabs_auth: str = setting("both", choices=EACHLABS_AUTH_STYLES)
    # How Eachlabs' webhook carries its secret: "plain" (X-Webhook-Secret only, what their
    # main-branch docs describe) or "hmac" (X-Webhook-Signature and timestamp, plus the
    # plain header, as the unmerged signature page shows).
    eachlabs_webhook_signing: str = setting("plain", choices=EACHLABS_SIGNING)
    # Eachlabs' published limits: predictions created per minute, and unfinished at once
    # (a 429 without Retry-After beyond it).
    eachlabs_rate_limit: int = setting(60, ge=0, note=OFF)
    eachlabs_max_concurrent: int = setting(10, ge=0, note=OFF)
    # Segmind's per-minute plan limit (Free 5, Pro 50); off by default so demos are not throttled.
    segmind_rate_limit: int = setting(0, ge=0, note=OFF)
    # AceData returns b64_json for GPT image models; "url" emulates the dall-e style instead.
    acedata_output: str = setting("b64_json", choices=ACEDATA_OUTPUTS)
    # AtlasCloud's upload answer: "official" (filename) or the seed's (file_name, content_type).
    atlas_upload_shape: str = setting("official", choices=ATLAS_UPLOAD_SHAPES)

    def __post_init__(self) -> None:
        check(self, ENV_PREFIX)
        # From the environment an empty key means "not set"; in code it is a mistake.
        if self.api_key == "":
            raise invalid(ENV_PREFIX + "API_KEY", "''", "unset or a non-empty key")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SandboxSettings:
        """Read ``HUB_SANDBOX_<FIELD>`` (e.g. HUB_SANDBOX_LATENCY); unset keeps the default."""
        return load(cls, environ, ENV_PREFIX)
