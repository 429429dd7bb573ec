"""API keys: kept only as hashes, checked in constant time, each key its own tenant."""

from __future__ import annotations

import hashlib
import hmac

from hub.config.env import Secret
from hub.errors import Unauthorized


def unauthorized() -> Unauthorized:
    return Unauthorized("unauthorized", "a valid API key is required: Authorization: Bearer <key>")


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def tenant(digest: bytes) -> str:
    """A key's tenant id: derived from its hash, never the key, so it is safe to store."""
    return digest.hex()[:32]


class Keys:
    def __init__(self, keys: tuple[Secret, ...]) -> None:
        self._hashes = tuple(key_hash(key.reveal()) for key in keys)
        # The tenants of HUB_API_KEYS (HUB_BUDGET_USD is their budget).
        self.configured = frozenset(tenant(digest) for digest in self._hashes)
        # Keys made with `hub keys create`, by hash: refreshed from the store (see ``load``).
        self._made: dict[bytes, str] = {}
        # Tenants whose key was revoked: everything they made stops working too.
        self.revoked: frozenset[str] = frozenset()

    def load(self, made: dict[bytes, str], revoked: frozenset[str] = frozenset()) -> None:
        """The unrevoked keys kept in the store, hash -> tenant."""
        self._made = made
        self.revoked = revoked

    def owner(self, presented: str) -> str | None:
        """The tenant id of a presented key, or None. Every configured hash is compared,
        with no early exit, so the time taken says nothing about which key came close. The
        keys made at run time are found by their hash: what a lookup's timing could tell
        is about a SHA-256 digest, which gives nothing towards a key."""
        digest = key_hash(presented)
        found = None
        for stored in self._hashes:
            if hmac.compare_digest(digest, stored):
                found = stored
        if found is not None:
            return tenant(found)
        return self._made.get(digest)

    def require(self, header: str) -> str:
        """The tenant id for an ``Authorization: Bearer`` header's key, or Unauthorized."""
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented or len(presented) > 512:
            raise unauthorized()
        owner = self.owner(presented.strip())
        if owner is None:
            raise unauthorized()
        return owner
