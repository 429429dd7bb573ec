"""The sandbox's settings: one frozen object, built in code or from ``HUB_SANDBOX_*``.

The first six fields are the interface the hub relies on. The rest are the switches
PROVIDERS.md §6 asks for where the providers' own documents disagree; their defaults
are the reading the fact sheet recommends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

ENV_PREFIX = "HUB_SANDBOX_"

EACHLABS_WEBHOOK_SHAPES = ("current", "legacy")
EACHLABS_AUTH_STYLES = ("both", "x-api-key", "bearer")
ACEDATA_OUTPUTS = ("b64_json", "url")
ATLAS_UPLOAD_SHAPES = ("official", "seed")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class SandboxSettings:
    """How the emulators behave. Times are in seconds; a limit of 0 switches it off."""

    latency: float = 2.0
    warmup: float = 0.0
    eachlabs_webhook_shape: str = "current"
    callback_retry_delay: float = 10.0
    allow_insecure_webhooks: bool = False
    # Kept out of repr so a logged settings object never shows the key.
    api_key: str | None = field(default=None, repr=False)
    # Which header Eachlabs accepts: its docs show X-API-Key in one place, Bearer in another.
    eachlabs_auth: str = "both"
    # Eachlabs' published limits: predictions created per minute, and at once.
    eachlabs_rate_limit: int = 60
    eachlabs_max_concurrent: int = 10
    # Segmind's per-minute plan limit (Free 5, Pro 50); off by default so demos are not throttled.
    segmind_rate_limit: int = 0
    # AceData returns b64_json for GPT image models; "url" emulates the dall-e style instead.
    acedata_output: str = "b64_json"
    # AtlasCloud's upload answer: "official" (filename) or the seed's (file_name, content_type).
    atlas_upload_shape: str = "official"

    def __post_init__(self) -> None:
        for name in ("latency", "warmup", "callback_retry_delay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("eachlabs_rate_limit", "eachlabs_max_concurrent", "segmind_rate_limit"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        _check_choice(
            "eachlabs_webhook_shape", self.eachlabs_webhook_shape, EACHLABS_WEBHOOK_SHAPES
        )
        _check_choice("eachlabs_auth", self.eachlabs_auth, EACHLABS_AUTH_STYLES)
        _check_choice("acedata_output", self.acedata_output, ACEDATA_OUTPUTS)
        _check_choice("atlas_upload_shape", self.atlas_upload_shape, ATLAS_UPLOAD_SHAPES)
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be None or a non-empty string")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SandboxSettings:
        """Read ``HUB_SANDBOX_<FIELD>`` (e.g. HUB_SANDBOX_LATENCY); unset keeps the default."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            raw = environ.get(ENV_PREFIX + item.name.upper())
            if raw is None:
                continue
            values[item.name] = _parse(item.name, raw, getattr(cls, item.name, None))
        return cls(**values)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _parse(name: str, raw: str, default: object) -> object:
    text = raw.strip()
    try:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(raw)
            return lowered in _TRUE
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()} is not valid: {raw!r}") from None
    if default is None:
        # api_key: an empty variable means "not set", not "the empty key".
        return text or None
    return text
