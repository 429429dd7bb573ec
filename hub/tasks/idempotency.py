"""Idempotency keys on the requests that create tasks, with Stripe's semantics.

A request that carries ``Idempotency-Key`` first reserves the key for its API key's
tenant: one atomic statement in the store, so only one request (on any replica) holds it,
under a lease. The holder does its work; the task-creating transaction binds the key to
the task (``TaskEngine.create(claim=...)``), so a crash anywhere leaves either no task and
a reservation that expires, or the task and the key pointing at it: never two tasks. The
answer is kept once given. Then, within the TTL:

- the same key and the same request (its digest) gets the kept answer again, and makes
  nothing; if the task exists but no answer was kept (a crash in between), the route
  answers from the task;
- the same key and another request: 422 ``idempotency_key_reused``;
- the same key while the first request still holds it, before its task exists: 409
  ``idempotency_key_in_use`` at once, with ``Retry-After`` (no waiting in the request).

A request refused before its task exists (bad input, a quota) keeps nothing, as Stripe
does not: the key is free again. Keys are scoped by tenant: one never sees another's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hub.config.settings import Settings
from hub.errors import Conflict, Invalid, Malformed
from hub.store.base import IdempotencyClaim, IdempotencyRecord, Store

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def checked_key(value: str | None) -> str | None:
    """The key from the header's value (None without one): 1 to 255 printable ASCII
    characters, else 400 naming the header."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value):
        raise Malformed(
            "invalid_idempotency_key",
            f"{HEADER}: must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            field=HEADER,
        )
    return value


class _Digest:
    """SHA-256 over length-prefixed parts, so no two different requests share a digest."""

    def __init__(self, route: str) -> None:
        self._hash = hashlib.sha256()
        self.part(route.encode())

    def part(self, data: bytes) -> None:
        self._hash.update(len(data).to_bytes(8, "big"))
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()


def body_fingerprint(route: str, body: bytes) -> bytes:
    """The digest of a request by its exact body bytes."""
    digest = _Digest(route)
    digest.part(body)
    return digest.digest()


def form_fingerprint(
    route: str, fields: Mapping[str, str], files: Mapping[str, Sequence[bytes]]
) -> bytes:
    """The digest of a multipart request by its fields and file bytes, not its bytes on
    the wire: a client sends another boundary each time it retries. Parts are taken by
    name; the files of one name in the order sent (``image[]`` order matters)."""
    digest = _Digest(route)
    for name in sorted(fields):
        digest.part(b"field")
        digest.part(name.encode())
        digest.part(fields[name].encode())
    for name in sorted(files):
        for data in files[name]:
            digest.part(b"file")
            digest.part(name.encode())
            digest.part(data)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer kept for the key: give it again."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Existing:
    """An earlier request with this key made this task; no answer was kept (yet)."""

    task_id: str


Begun = IdempotencyClaim | Replay | Existing


class IdempotencyKeys:
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._ttl = settings.idempotency_ttl_seconds
        self._lease = settings.idempotency_lease_seconds

    async def begin(self, owner: str, key: str, fingerprint: bytes) -> Begun:
        """Hold the key (a claim to pass to ``TaskEngine.create``), or what an earlier
        request with it left; 422 if that was another request, 409 if it is under way."""
        now = time.time()
        new = IdempotencyRecord(
            owner, key, fingerprint, secrets.token_hex(16), now + self._lease, now
        )
        held = await self._store.reserve_idempotency(new, now, now - self._ttl)
        if held.token == new.token:
            return IdempotencyClaim(owner, key, new.token)
        if not hmac.compare_digest(held.fingerprint, fingerprint):
            raise Invalid(
                "idempotency_key_reused",
                f"{HEADER}: this key was used with another request; use a new key",
                field=HEADER,
            )
        if held.status is not None and held.body is not None:
            return Replay(held.status, held.body)
        if held.task_id is not None:
            return Existing(held.task_id)
        raise Conflict(
            "idempotency_key_in_use",
            f"{HEADER}: a request with this key is still being answered; retry shortly",
            field=HEADER,
            retry_after=1.0,
        )

    async def finish(self, owner: str, key: str, task_id: str, status: int, body: bytes) -> None:
        """Keep the answer given for the key's task; a replay gives it again."""
        await self._store.finish_idempotency(owner, key, task_id, status, body)

    async def release(self, claim: IdempotencyClaim) -> None:
        """The request was refused before it made a task: the key is free again."""
        await self._store.release_idempotency(claim)

    async def prune(self) -> int:
        return await self._store.prune_idempotency(time.time() - self._ttl)
