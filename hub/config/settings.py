"""One typed Settings object, read from ``HUB_*`` environment variables.

Each field declares its variable's type and allowed values (``hub.config.env``). They are
checked whenever a Settings is made, from the environment or in code (``replace`` too),
so a hub never runs on a value it cannot use.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub.config.env import Secret, SettingsError, check, invalid, load, setting, variables

PREFIX = "HUB_"
DAY = 86_400
OFF = "0 = off"


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = setting(Path("hub-data"))
    # Secret: a PostgreSQL URL may carry a password. Its scheme is checked where the
    # store is opened (sqlite_path), which names what is supported.
    database_url: str = setting("", secret=True)
    # Newest first: the first key signs, every key verifies, so a secret can rotate
    # without breaking URLs already handed out.
    secret_keys: tuple[Secret, ...] = setting((), alias="HUB_SECRET")
    # Defaults to http://HOST:PORT; set it to the address providers can reach.
    public_url: str = setting("", url=True)
    api_keys: tuple[Secret, ...] = setting(())
    # The monthly budget in USD of each key in HUB_API_KEYS (keys made with `hub keys
    # create` have their own): a task that would go over it is refused, 402.
    budget_usd: float = setting(0.0, ge=0, note="0 = no budget")
    host: str = setting("127.0.0.1")
    # PORT is what container platforms set; HUB_PORT wins over it.
    port: int = setting(8000, ge=1, le=65535, alias="PORT")
    # Every connection: the request line and headers (bytes and count), the time they
    # may take to arrive, and how many connections may be open at once.
    max_header_bytes: int = setting(64 * 1024, ge=1024)
    max_headers: int = setting(100, ge=10)
    header_timeout_seconds: float = setting(10.0, gt=0, duration=True)
    max_connections: int = setting(10_000, ge=1)
    max_callback_bytes: int = setting(32 * 1024 * 1024, ge=1)
    # A request body must have arrived within this long (408 after).
    body_timeout_seconds: float = setting(30.0, gt=0, duration=True)
    # A callback body larger than this is kept byte for byte but left out of its event.
    max_event_body_bytes: int = setting(1024 * 1024, ge=0)
    retention_seconds: int = setting(7 * DAY, gt=0, duration=True, alias="HUB_RETENTION")
    # A channel delivery matching one accepted this recently is a duplicate.
    dedupe_window_seconds: int = setting(DAY, gt=0, duration=True, alias="HUB_DEDUPE_WINDOW")
    prune_interval_seconds: float = setting(3600.0, gt=0, duration=True)
    channel_ttl_seconds: int = setting(7 * DAY, gt=0, duration=True)
    max_ttl_seconds: int = setting(365 * DAY, gt=0, duration=True)
    watch_ttl_seconds: int = setting(DAY, gt=0, duration=True)
    # The stream ticker wakes this often: 0 would spin it.
    heartbeat_seconds: float = setting(15.0, gt=0, duration=True)
    # A subscriber that takes longer than this to accept one write is cut off.
    send_timeout_seconds: float = setting(30.0, gt=0, duration=True)
    retry_ms: int = setting(2000, ge=0)
    max_wait_seconds: int = setting(300, ge=0, duration=True)
    subscriber_queue_size: int = setting(1000, ge=1)
    # ...or this many bytes of event data, whichever comes first: bodies can be a megabyte.
    subscriber_queue_bytes: int = setting(16 * 1024 * 1024, ge=1)
    replay_page_size: int = setting(1000, ge=1)
    # Goes into a PRAGMA as it is: only SQLite's own words.
    sqlite_synchronous: str = setting("FULL", choices=("OFF", "NORMAL", "FULL", "EXTRA"))
    sandbox: bool = setting(False)
    # Lets input and output image URLs point at loopback (a sandbox run alone on this
    # machine). Implied by sandbox mode; never for a public deployment.
    allow_loopback_urls: bool = setting(False)
    # The provider POST /v1/images/edits uses without a "provider" field ("" = the first
    # configured of acedata, eachlabs, atlascloud, segmind), or several, comma-separated,
    # to try in order. hub.providers.config checks the names: this package knows none.
    default_provider: str = setting("")
    # Tasks: a deadline after which a task is timed_out, submit attempts, work at once
    # (0: this process works no tasks, another replica does).
    task_timeout_seconds: int = setting(600, gt=0, duration=True)
    task_max_attempts: int = setting(5, ge=1)
    worker_concurrency: int = setting(32, ge=0, note="0 = this process works no tasks")
    # A claimed task is held this long, and renewed every third of it while its worker
    # lives; a dead worker's task is taken over (by another replica) once it runs out.
    task_lease_seconds: float = setting(12.0, gt=0, duration=True)
    # A submit whose outcome is unknown (the provider may have accepted and billed it) is
    # never sent again: the task waits this long for the provider's callback, where it was
    # given one, then fails with error.code outcome_unknown.
    task_unknown_grace_seconds: float = setting(300.0, ge=0, duration=True)
    # A task with fallback providers leaves one whose rate limit (or slot wait) would
    # hold it longer than this, counted from its first attempt there.
    task_patience_seconds: float = setting(30.0, ge=0, duration=True)
    # The window each provider's HUB_<PROVIDER>_RATE_PER_MINUTE is counted in (tests
    # shorten it; a real account's limit is per minute).
    provider_rate_window_seconds: float = setting(60.0, gt=0, duration=True)
    max_image_bytes: int = setting(50 * 1024 * 1024, ge=1)
    max_upload_bytes: int = setting(50 * 1024 * 1024, ge=1)
    # Outbound webhooks: time for one POST, attempts per event, the first retry's delay
    # (doubling up to an hour), and failures in a row that mark an endpoint failing.
    webhook_timeout_seconds: float = setting(10.0, gt=0, duration=True)
    webhook_max_attempts: int = setting(8, ge=1)
    webhook_retry_seconds: float = setting(5.0, gt=0, duration=True)
    webhook_failing_after: int = setting(5, ge=1)
    # How long a replica's claim on a webhook attempt holds without being renewed: renewed
    # while the attempt is in flight, so a dead replica's is taken over this soon.
    webhook_lease_seconds: float = setting(15.0, ge=1, duration=True)
    # Logs: "text" or "json" lines; access_log adds a line per request (route, status, ms).
    log_format: str = setting("text", choices=("text", "json"))
    access_log: bool = setting(False)
    # Requests a second per API key and per callback URL.
    rate_limit_per_key: float = setting(100.0, ge=0, note=OFF)
    rate_limit_per_callback: float = setting(100.0, ge=0, note=OFF)
    # What one key may hold at once; beyond, 429 quota_exceeded naming the quota.
    quota_channels: int = setting(1000, ge=0, note=OFF)
    quota_live_tasks: int = setting(100, ge=0, note=OFF)
    quota_webhooks: int = setting(100, ge=0, note=OFF)
    quota_blob_bytes: int = setting(2 * 1024**3, ge=0, note=OFF)
    quota_streams: int = setting(1000, ge=0, note=OFF)
    # Who may read /metrics: this bearer token, or (unset) clients on loopback only.
    metrics_token: str = setting("", secret=True)
    # Idempotency-Key: how long a key's answer is kept (and replayed), and how long a
    # request may hold a key before making its task (past that, a retry may take it over).
    idempotency_ttl_seconds: int = setting(DAY, gt=0, duration=True)
    idempotency_lease_seconds: float = setting(120.0, gt=0, duration=True)
    # POST /v1/images/edits waits at most this long for its task (then an OpenAI-shaped
    # 504; the task goes on): below the openai SDK's 600 s timeout, which it would retry.
    openai_wait_seconds: float = setting(540.0, gt=0, le=590, duration=True)
    # Every other HUB_* variable (HUB_EACHLABS_API_KEY, HUB_SANDBOX_LATENCY, ...), read by
    # the modules they configure with the same parser. Out of repr: it holds provider keys.
    extra_env: tuple[tuple[str, str], ...] = dataclasses.field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'hub.db'}")
        public_url = self.public_url
        if not public_url:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
            host = f"[{host}]" if ":" in host else host  # an IPv6 address, e.g. ::1
            public_url = f"http://{host}:{self.port}"
        object.__setattr__(self, "public_url", public_url.rstrip("/"))
        check(self, PREFIX)
        if self.channel_ttl_seconds > self.max_ttl_seconds:
            raise invalid(
                "HUB_CHANNEL_TTL_SECONDS",
                repr(self.channel_ttl_seconds),
                f"at most HUB_MAX_TTL_SECONDS ({self.max_ttl_seconds})",
            )

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
        settings = load(cls, env, PREFIX)
        known = variables(cls, PREFIX)
        extra = sorted((k, v) for k, v in env.items() if k.startswith(PREFIX) and k not in known)
        return settings.replace(extra_env=tuple(extra))
