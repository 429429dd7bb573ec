"""Store faults the caller should wait out, told apart from bugs, and turned into
``StoreUnavailable`` (503 with ``Retry-After``) at the store's boundary.

A full disk, an I/O error, a lock held too long (SQLite), a dropped or refused connection,
a server shutting down or out of resources (PostgreSQL): the write did not commit, the
store stays consistent, and the same request will work once the store is back. Anything
else (a constraint, a syntax error) is a bug and stays a 500.

One thing a store error may mean is not of this kind: an fsync that failed. Its pages may
already be gone from the kernel's cache, so nothing written since can be trusted and the
process stops (``sqlite_writer.Writer._stop_for``). The two are told apart by where the
error comes from, not by its errno: a full disk reported by a write (``SQLITE_FULL``) was
never committed; an fsync, the WAL's own (``_WalSync``) or one SQLite reports
(``SQLITE_IOERR_FSYNC``, ``SQLITE_IOERR_DIR_FSYNC``), is fatal even when its errno says
``ENOSPC``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg

from hub.store.base import StoreUnavailable

log = logging.getLogger("hub.store")

C = TypeVar("C", bound=type)

LOG_EVERY = 5.0

# Primary result codes (the low byte of an extended code) of a store that cannot do it now.
_SQLITE_TRANSIENT = {
    5,  # SQLITE_BUSY
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    8,  # SQLITE_READONLY (a file system remounted read-only)
    10,  # SQLITE_IOERR (all but the fsync ones below)
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
}
SQLITE_IOERR_FSYNC = 10 | (4 << 8)
SQLITE_IOERR_DIR_FSYNC = 10 | (5 << 8)
_SQLITE_FSYNC = {SQLITE_IOERR_FSYNC, SQLITE_IOERR_DIR_FSYNC}


def sqlite_fsync_failed(exc: BaseException) -> bool:
    """SQLite reports that one of its own fsyncs failed: as fatal as ours."""
    return getattr(exc, "sqlite_errorcode", None) in _SQLITE_FSYNC


def sqlite_transient(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError) or sqlite_fsync_failed(exc):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # no code attached (not raised by SQLite itself): by its words
        return any(w in str(exc) for w in ("disk is full", "disk I/O", "database is locked"))
    return code & 0xFF in _SQLITE_TRANSIENT


# A server that went away, refused us, or is out of room (class 08, 57P, 53; 40001/40P01).
_POSTGRES_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, too many connections
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    # A pooled connection whose server end was just killed: asyncpg has not seen the
    # socket close yet, and finds the protocol still waiting on the killed query.
    asyncpg.exceptions.InternalClientError,
    OSError,  # refused, reset: no server there now
    TimeoutError,  # connecting took too long
)


def postgres_transient(exc: BaseException) -> bool:
    if isinstance(exc, _POSTGRES_TRANSIENT):
        return True
    # asyncpg's own word for a connection the server closed under it.
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


def unavailable_on(transient: Callable[[BaseException], bool]) -> Callable[[C], C]:
    """A class decorator: every public coroutine method of the store raises
    ``StoreUnavailable`` for an error ``transient`` says is the store's state, not a
    bug. ``open`` and ``close`` are left as they are: a store that cannot start should
    say exactly why."""

    def decorate(cls: C) -> C:
        for name, method in list(vars(cls).items()):
            if name.startswith("_") or name in ("open", "close"):
                continue
            if inspect.iscoroutinefunction(method):
                setattr(cls, name, _translating(method, transient))
        return cls

    return decorate


def _translating(
    method: Callable[..., Any], transient: Callable[[BaseException], bool]
) -> Callable[..., Any]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except StoreUnavailable:
            raise
        except Exception as exc:
            if not transient(exc):
                raise
            _note(args[0], method.__name__, exc)
            raise unavailable() from exc

    return call


def _note(store: Any, where: str, exc: BaseException) -> None:
    """Logged once per LOG_EVERY seconds per store: a flood against a full disk would
    otherwise write a line per request to the same disk."""
    now = time.monotonic()
    if now - getattr(store, "_fault_logged_at", -LOG_EVERY) >= LOG_EVERY:
        store._fault_logged_at = now
        log.warning("store unavailable (%s): %s: %s", where, type(exc).__name__, exc)


def unavailable() -> StoreUnavailable:
    return StoreUnavailable("store_unavailable", "the store cannot take this now; retry later")
