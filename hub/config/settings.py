"""One typed Settings object, read from ``HUB_*`` environment variables."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class Secret:
    """A string that never shows itself in ``repr`` or ``str`` (and so never in a log)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    """A ``HUB_*`` variable holds a value the hub cannot use."""


DAY = 86_400


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("hub-data")
    # Out of repr: a PostgreSQL URL may carry a password.
    database_url: str = dataclasses.field(default="", repr=False)
    # Newest first: the first key signs, every key verifies, so a secret can rotate
    # without breaking URLs already handed out.
    secret_keys: tuple[Secret, ...] = ()
    # Defaults to http://HOST:PORT; set it to the address providers can reach.
    public_url: str = ""
    api_keys: tuple[Secret, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    max_callback_bytes: int = 32 * 1024 * 1024
    # A request body must have arrived within this long (408 after).
    body_timeout_seconds: float = 30.0
    # A callback body larger than this is kept byte for byte but left out of its event.
    max_event_body_bytes: int = 1024 * 1024
    retention_seconds: int = 7 * DAY
    prune_interval_seconds: float = 3600.0
    channel_ttl_seconds: int = 7 * DAY
    max_ttl_seconds: int = 365 * DAY
    watch_ttl_seconds: int = DAY
    heartbeat_seconds: float = 15.0
    # A subscriber that takes longer than this to accept one write is cut off.
    send_timeout_seconds: float = 30.0
    retry_ms: int = 2000
    max_wait_seconds: int = 300
    subscriber_queue_size: int = 1000
    # ...or this many bytes of event data, whichever comes first: bodies can be a megabyte.
    subscriber_queue_bytes: int = 16 * 1024 * 1024
    replay_page_size: int = 1000
    sqlite_synchronous: str = "FULL"
    sandbox: bool = False
    # Lets input and output image URLs point at loopback (a sandbox run alone on this
    # machine). Implied by sandbox mode; never for a public deployment.
    allow_loopback_urls: bool = False
    # The provider POST /v1/images/edits uses without a "provider" field ("" = the first
    # configured of acedata, eachlabs, atlascloud, segmind).
    default_provider: str = ""
    # Tasks: a deadline after which a task is timed_out, submit attempts, work at once.
    task_timeout_seconds: int = 600
    task_max_attempts: int = 5
    worker_concurrency: int = 32
    # A claimed task is held for its provider's request timeout plus this margin; past
    # that, another worker (another replica, with PostgreSQL) takes it over.
    task_lease_margin_seconds: float = 30.0
    max_image_bytes: int = 50 * 1024 * 1024
    max_upload_bytes: int = 50 * 1024 * 1024
    # Outbound webhooks: time for one POST, attempts per event, the first retry's delay
    # (doubling up to an hour), and failures in a row that mark an endpoint failing.
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_retry_seconds: float = 5.0
    webhook_failing_after: int = 5
    # Logs: "text" or "json" lines; access_log adds a line per request (route, status, ms).
    log_format: str = "text"
    access_log: bool = False
    # Requests a second per API key and per callback URL (0 turns a limit off).
    rate_limit_per_key: float = 100.0
    rate_limit_per_callback: float = 100.0
    # Every other HUB_* variable (HUB_EACHLABS_API_KEY, HUB_SANDBOX_LATENCY, ...), read by
    # the modules they configure. Out of repr: it holds provider keys.
    extra_env: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"HUB_LOG_FORMAT: use text or json, not {self.log_format!r}")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'hub.db'}")
        public_url = self.public_url
        if not public_url:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
            public_url = f"http://{host}:{self.port}"
        object.__setattr__(self, "public_url", public_url.rstrip("/"))

    @property
    def loopback_allowed(self) -> bool:
        return self.sandbox or self.allow_loopback_urls

    @property
    def postgres(self) -> bool:
        return self.database_url.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_path(self) -> Path:
        prefix = "sqlite:///"
        if not self.database_url.startswith(prefix):
            scheme = self.database_url.partition(":")[0]
            raise SettingsError(
                f"HUB_DATABASE_URL: unsupported database {scheme!r}"
                " (use sqlite:///PATH or postgresql://...)"
            )
        return Path(self.database_url[len(prefix) :])

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``HUB_*`` variables; unset ones keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name == "extra_env":
                continue
            name = "HUB_" + field.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(name, field.default, raw)
        # Short names that DESIGN.md documents.
        aliases = (("HUB_SECRET", "secret_keys"), ("HUB_RETENTION", "retention_seconds"))
        for name, field_name in aliases:
            raw = env.get(name)
            if raw:
                default = cls.__dataclass_fields__[field_name].default
                values[field_name] = _parse(name, default, raw)
        known = {"HUB_" + f.name.upper() for f in dataclasses.fields(cls)}
        known |= {name for name, _ in aliases}
        values["extra_env"] = tuple(
            sorted((k, v) for k, v in env.items() if k.startswith("HUB_") and k not in known)
        )
        if "port" not in values and env.get("PORT"):
            values["port"] = _parse("PORT", 0, env["PORT"])
        return cls(**values)


def _parse(name: str, default: object, raw: str) -> object:
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(_duration(raw)) if name.endswith(("SECONDS", "RETENTION")) else int(raw)
        if isinstance(default, float):
            return _duration(raw)
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, tuple):
            return tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())
    except ValueError:
        raise SettingsError(f"{name}: cannot use {raw!r}") from None
    return raw


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY}


def _duration(raw: str) -> float:
    """``90``, ``1.5``, ``90s``, ``15m``, ``12h`` or ``7d`` as seconds."""
    raw = raw.strip().lower()
    if raw and raw[-1] in _UNITS:
        return float(raw[:-1]) * _UNITS[raw[-1]]
    return float(raw)
