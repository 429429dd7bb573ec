"""Signed, expiring tokens (itsdangerous): one serializer per purpose, each with its own salt.

A token carries its own expiry (``e``, Unix seconds) because each URL is issued with its own
TTL. The signature is checked before anything in the payload is trusted, and the expiry only
after: a forged token is always 401, a genuine but old one 410.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from hub.config.env import Secret
from hub.errors import Gone, Unauthorized

# Longer than any token the hub issues; checked before any crypto so a huge token costs nothing.
MAX_TOKEN_LENGTH = 1024
# Verified tokens remembered, so a provider posting to one URL again and again (and every
# callback of a load) pays for the HMAC and the JSON once. Expiry is still checked each time.
VERIFIED_CACHE_SIZE = 4096

CALLBACK = "hub.callback.v1"
WATCH = "hub.watch.v1"
# A blob served to a provider that needs an image URL.
BLOB = "hub.blob.v1"


@dataclass(frozen=True, slots=True)
class Claims:
    """What a token grants: a channel's inbox or stream, one task's callback, one blob."""

    channel_id: str | None
    expires_at: int
    task_id: str | None = None
    blob_id: str | None = None
    # A channel's callback URL issued with an id (listed, revocable); None for older ones.
    url_id: str | None = None

    def digest(self) -> bytes:
        """What identifies the URL: the same for every token that grants the same, so
        limits and dedupe keyed on it cannot be dodged by presenting another token."""
        fields: tuple[object, ...] = (self.channel_id, self.task_id, self.blob_id, self.expires_at)
        if self.url_id is not None:
            fields += (self.url_id,)
        return hashlib.sha256(repr(fields).encode()).digest()


class Signer:
    def __init__(self, secret_keys: tuple[Secret, ...]) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        # itsdangerous signs with the last key and verifies with every key: newest last.
        keys = [key.reveal() for key in reversed(secret_keys)]
        self._serializers = {
            purpose: URLSafeSerializer(keys, salt=purpose) for purpose in (CALLBACK, WATCH, BLOB)
        }
        # Only successes are cached (an exception is never), so a forger gains nothing.
        self._claims = functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)(self._claims_uncached)

    def issue(self, purpose: str, claims: Claims) -> str:
        payload: dict[str, Any] = {"e": claims.expires_at}
        named = (
            ("c", claims.channel_id), ("t", claims.task_id), ("b", claims.blob_id),
            ("u", claims.url_id),
        )  # fmt: skip
        for key, value in named:
            if value is not None:
                payload[key] = value
        token = self._serializers[purpose].dumps(payload)
        assert isinstance(token, str)
        return token

    def verify(self, purpose: str, token: str, now: float | None = None) -> Claims:
        """The token's claims; Unauthorized if it is not ours or was tampered with, Gone if
        it has expired."""
        if len(token) > MAX_TOKEN_LENGTH or not canonical(token):
            raise Unauthorized("invalid_token", "the token is not valid")
        claims = self._claims(purpose, token)
        if claims.expires_at <= (time.time() if now is None else now):
            raise Gone("expired_token", "the token has expired")
        return claims

    def _claims_uncached(self, purpose: str, token: str) -> Claims:
        try:
            payload = self._serializers[purpose].loads(token)
            return Claims(
                payload.get("c"), int(payload["e"]), payload.get("t"), payload.get("b"),
                payload.get("u"),
            )  # fmt: skip
        except (BadSignature, KeyError, TypeError, ValueError):
            raise Unauthorized("invalid_token", "the token is not valid") from None


_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def canonical(token: str) -> bool:
    """Whether ``token`` is exactly how the hub writes one: ``payload.signature``, each
    unpadded base64url that re-encodes to itself. itsdangerous decodes more leniently (a
    changed last character or padding, a stray character, can decode to the same bytes),
    so a variant would verify and, being another string, dodge what is keyed on it."""
    body = token.removeprefix(".")  # itsdangerous marks a compressed payload with a dot
    parts = body.split(".")
    if len(parts) != 2:
        return False
    for part in parts:
        if not _SEGMENT.fullmatch(part) or len(part) % 4 == 1:
            return False
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != part:
            return False
    return True
