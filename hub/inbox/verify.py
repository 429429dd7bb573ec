"""Who sent a delivery: a channel's verifier checks the sender's signature over the raw
bytes, before anything is parsed or stored.

Schemes, each as its sender documents it:
- ``standard-webhooks`` (Svix and others): ``webhook-id``/``-timestamp``/``-signature``
  (or the ``svix-`` spelling), HMAC-SHA256 of ``id.timestamp.body`` with the base64 key
  after ``whsec_``; any ``v1,`` signature in the header may match; 5 minutes' tolerance.
- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.
- ``stripe``: ``Stripe-Signature: t=...,v1=...``, hex HMAC-SHA256 of ``t.body`` keyed with
  the whole ``whsec_`` secret; any ``v1`` may match; 5 minutes' tolerance.
- ``hmac-sha256``: a header of your naming, hex or base64, after an optional prefix.

Every comparison is constant-time. Secrets are never logged, and shown only as a hint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from hub.errors import invalid
from hub.inbox.shapes import Verifier, VerifierInfo

TOLERANCE_SECONDS = 300
MAX_SIGNATURES = 16  # entries read from one header: bounded work per delivery


class SignatureMismatch(Exception):
    """The delivery is not from whom the channel trusts; the message says why (never
    anything of the secret)."""


def checked(verifier: Verifier) -> Verifier:
    """The verifier, if its fields fit its scheme (422 naming the field otherwise)."""
    extra = verifier.header or verifier.encoding or verifier.prefix
    if verifier.scheme == "hmac-sha256":
        if verifier.header is None:
            raise invalid("verify.header", "is required for the hmac-sha256 scheme")
    elif extra is not None:
        raise invalid("verify", "header, encoding and prefix are for the hmac-sha256 scheme")
    if verifier.scheme == "standard-webhooks":
        _standard_key(verifier.secret)
    return verifier


def describe(verifier: Verifier) -> VerifierInfo:
    return VerifierInfo(
        scheme=verifier.scheme,
        secret_hint="..." + verifier.secret[-4:] if len(verifier.secret) >= 12 else "...",
        header=verifier.header,
        encoding=verifier.encoding if verifier.scheme == "hmac-sha256" else None,
        prefix=verifier.prefix,
    )


def verify(
    verifier: Verifier, headers: Mapping[str, str], body: bytes, now: float | None = None
) -> None:
    """Return if ``body`` with ``headers`` (lower-case names) is signed with the channel's
    secret; else raise SignatureMismatch."""
    at = time.time() if now is None else now
    if verifier.scheme == "standard-webhooks":
        _standard(verifier.secret, headers, body, at)
    elif verifier.scheme == "github":
        digest = hmac.new(verifier.secret.encode(), body, hashlib.sha256).hexdigest()
        _expect(headers.get("x-hub-signature-256"), "sha256=" + digest, "X-Hub-Signature-256")
    elif verifier.scheme == "stripe":
        _stripe(verifier.secret, headers.get("stripe-signature"), body, at)
    else:
        assert verifier.header is not None
        mac = hmac.new(verifier.secret.encode(), body, hashlib.sha256).digest()
        text = mac.hex() if verifier.encoding in (None, "hex") else base64.b64encode(mac).decode()
        name = verifier.header.lower()
        _expect(headers.get(name), (verifier.prefix or "") + text, verifier.header)


def _expect(given: str | None, expected: str, header: str) -> None:
    if given is None:
        raise SignatureMismatch(f"no {header} header")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise SignatureMismatch(f"{header} does not match")


def _standard_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("verify.secret", "must be whsec_ and base64") from None


def _standard(secret: str, headers: Mapping[str, str], body: bytes, at: float) -> None:
    prefix = "webhook-" if "webhook-id" in headers else "svix-"
    message_id = headers.get(prefix + "id")
    timestamp = headers.get(prefix + "timestamp")
    signatures = headers.get(prefix + "signature")
    if message_id is None or timestamp is None or signatures is None:
        raise SignatureMismatch("no webhook-id, webhook-timestamp and webhook-signature")
    _fresh(timestamp, at)
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(
        hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    ).decode()
    for entry in signatures.split()[:MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
            return
    raise SignatureMismatch("webhook-signature does not match")


def _stripe(secret: str, header: str | None, body: bytes, at: float) -> None:
    if header is None:
        raise SignatureMismatch("no Stripe-Signature header")
    timestamp = None
    candidates = []
    for item in header.split(",")[:MAX_SIGNATURES]:
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureMismatch("Stripe-Signature has no t= and v1=")
    _fresh(timestamp, at)
    signed = timestamp.encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
    if not any(hmac.compare_digest(value.encode(), expected) for value in candidates):
        raise SignatureMismatch("Stripe-Signature does not match")


def _fresh(timestamp: str, at: float) -> None:
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureMismatch("the signature's timestamp is not a number")
    if abs(at - int(timestamp)) > TOLERANCE_SECONDS:
        raise SignatureMismatch("the signature's timestamp is outside the tolerance")
