"""The data directory: where the hub keeps its database and the secrets it generated."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from hub.config.env import Secret
from hub.config.settings import Settings

SECRET_FILE = "secret"  # noqa: S105 (a file name)
API_KEY_FILE = "api-key"
SANDBOX_KEY_FILE = "sandbox-key"
SANDBOX_KEY_VARIABLE = "HUB_SANDBOX_KEY"


def new_sandbox_key() -> str:
    return "sbx_" + secrets.token_urlsafe(24)


def prepare(settings: Settings) -> tuple[Settings, str | None]:
    """Create the data dir and fill in a generated secret and API key where none is set,
    and in sandbox mode the emulators' key (``<data dir>/sandbox-key``, unless
    HUB_SANDBOX_KEY is set), which the sandbox then requires and the providers send.

    Returns the completed settings and the API key if it was generated just now (so the
    caller can show it once); later starts read it back from ``<data dir>/api-key``.
    """
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    new_key = None
    if not settings.secret_keys:
        secret, _ = _read_or_create(
            settings.data_dir / SECRET_FILE, lambda: secrets.token_urlsafe(32)
        )
        settings = settings.replace(secret_keys=(Secret(secret),))
    if not settings.api_keys:
        key, created = _read_or_create(
            settings.data_dir / API_KEY_FILE, lambda: "hub_" + secrets.token_urlsafe(24)
        )
        settings = settings.replace(api_keys=(Secret(key),))
        new_key = key if created else None
    env = dict(settings.extra_env)
    if settings.sandbox and not env.get(SANDBOX_KEY_VARIABLE):
        # The emulators take this key alone, and the hub's providers send it: nobody else
        # reaching the hub can read or feed the sandbox's jobs (issue 15, finding 5).
        sandbox_key, _ = _read_or_create(settings.data_dir / SANDBOX_KEY_FILE, new_sandbox_key)
        env[SANDBOX_KEY_VARIABLE] = sandbox_key
        settings = settings.replace(extra_env=tuple(sorted(env.items())))
    return settings, new_key


def _read_or_create(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    value = make()
    # Written aside, then linked into place: link() fails if the name exists, so two
    # processes starting at once agree on one value and neither reads a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip(), False
    finally:
        tmp.unlink()
    return value, True
