"""Webhook signatures as the providers make them.

Eachlabs: ``X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``.
AtlasCloud: Ed25519 over ``"<timestamp>.<body>"``, base64url without padding, with the
public key published as a JWKS. Each sandbox makes its own Ed25519 key, never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed_message(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode("ascii") + b"." + body


def eachlabs_headers(secret: str, body: bytes, timestamp: str) -> dict[str, str]:
    digest = hmac.new(secret.encode("utf-8"), signed_message(timestamp, body), hashlib.sha256)
    return {
        "X-Webhook-Signature": f"sha256={digest.hexdigest()}",
        "X-Webhook-Timestamp": timestamp,
        # Older receivers compare this plaintext header; Eachlabs still sends it.
        "X-Webhook-Secret": secret,
    }


class Ed25519Signer:
    """One Ed25519 key pair and its key id."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self._public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = "sandbox-" + hashlib.sha256(self._public).hexdigest()[:16]

    def sign(self, message: bytes) -> str:
        return b64url(self._key.sign(message))

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": b64url(self._public),
                    "kid": self.key_id,
                    "use": "sig",
                    "alg": "EdDSA",
                }
            ]
        }
