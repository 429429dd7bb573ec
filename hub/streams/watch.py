"""Watch tokens: a stream's URL with a signed, expiring, read-only token in its query, for
clients that cannot send headers (a browser's EventSource). Each opens one stream only."""

from __future__ import annotations

import time

from hub.access.tokens import WATCH, Claims, Signer
from hub.errors import Unauthorized


def watch_url(
    signer: Signer,
    stream_url: str,
    ttl: int,
    *,
    channel_id: str | None = None,
    task_id: str | None = None,
) -> str:
    """``stream_url`` with a token that opens that one stream for ``ttl`` seconds."""
    expires = int(time.time()) + ttl
    token = signer.issue(WATCH, Claims(channel_id, expires, task_id=task_id))
    return f"{stream_url}?token={token}"


def check_watch(
    signer: Signer, token: str, *, channel_id: str | None = None, task_id: str | None = None
) -> None:
    """Unauthorized (Gone if expired) unless ``token`` is a watch token for exactly this
    stream."""
    claims = signer.verify(WATCH, token)
    if claims.channel_id != channel_id or claims.task_id != task_id:
        what = "channel" if channel_id is not None else "task"
        raise Unauthorized("invalid_token", f"the token is not valid for this {what}")
