"""Blob records: made from bytes, and the URLs they are served at."""

from __future__ import annotations

import hashlib
import time

from hub.access.tokens import BLOB, Claims, Signer
from hub.shapes import BLOB_IDS
from hub.store.base import Blob


def new_id() -> str:
    return BLOB_IDS.new()


def make(owner: str, data: bytes, content_type: str) -> Blob:
    return Blob(
        id=new_id(),
        owner=owner,
        content_type=content_type,
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        created_at=time.time(),
        data=data,
    )


def url(public_url: str, blob_id: str) -> str:
    """Where a client with the owner's key reads the blob."""
    return f"{public_url}/v1/blobs/{blob_id}"


def public_url(signer: Signer, base: str, blob_id: str, ttl: int) -> str:
    """A signed, expiring URL a provider can fetch without a key."""
    token = signer.issue(BLOB, Claims(None, int(time.time()) + ttl, blob_id=blob_id))
    return f"{base}/blobs/{token}"
