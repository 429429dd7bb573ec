"""``POST /callbacks/{token}``: the providers' target. The signed token is the credential:
it names a channel (an inbox anyone may post to) or one of the hub's own tasks."""

from __future__ import annotations

import functools
import time

from starlette.requests import Request
from starlette.responses import Response

from hub.access.tokens import CALLBACK, VERIFIED_CACHE_SIZE, Claims, Signer
from hub.bodies.read import read_body
from hub.errors import Gone, HubError, Malformed, Unauthorized, Unavailable, not_found
from hub.inbox import intake, verify
from hub.inbox.lookup import Inbox
from hub.inbox.shapes import ChannelAck, TaskAck
from hub.providers.base import CallbackRejected
from hub.web.routes.common import hub, json_response
from hub.web.state import HubState

# How a provider's refusal of its own callback is answered.
_REJECTED: dict[str, type[HubError]] = {
    "signature": Unauthorized,
    "unreadable": Malformed,
    "unavailable": Unavailable,
}
_CODES = {
    "signature": "invalid_signature",
    "unreadable": "bad_request",
    "unavailable": "unavailable",
}


async def receive(request: Request) -> Response:
    state = hub(request)
    token = request.path_params["token"]
    claims, url_digest = _verified(state.signer, token)
    if claims.expires_at <= time.time():
        raise Gone("expired_token", "the token has expired")  # as Signer.verify says it
    # Only a genuine URL gets a bucket, so forged ones cannot fill the table; keyed on
    # what the token grants (url_digest), so another spelling of it shares the bucket.
    state.callback_limit.check(url_digest)
    # An erased channel or a revoked URL is refused before its body is read.
    inbox = None if claims.task_id is not None else await _open_inbox(state, claims)
    settings = state.settings
    body = await read_body(request, settings.max_callback_bytes, settings.body_timeout_seconds)
    arrival = intake.Arrival(
        url_digest=url_digest,
        headers=request.headers.raw,
        query=request.scope["query_string"].decode("latin-1"),
        body=body,
        received_at=time.time(),
    )
    if claims.task_id is not None:
        return await _task_callback(state, request, arrival, claims.task_id)
    assert claims.channel_id is not None and inbox is not None
    options = inbox.options
    verified = False
    if options.verify is not None:
        try:
            verify.verify(options.verify, request.headers, body)
        except verify.SignatureMismatch as exc:
            # Refused before anything is kept: counted, and said why (never the secret).
            state.metrics.signatures.labels(options.verify.scheme).inc()
            raise Unauthorized(
                "invalid_signature", f"the signature does not check: {exc}"
            ) from None
        verified = True
    delivery = intake.channel_delivery(
        arrival,
        claims.channel_id,
        settings.max_event_body_bytes,
        verified=verified,
        url_id=claims.url_id,
        dedupe_window=settings.dedupe_window_seconds if options.dedupe else None,
        task_id_path=options.task_id_path,
    )
    # Answered only once committed: a 200 means the bytes are on disk.
    event = await state.store.add_delivery(delivery)
    if event is None:
        state.metrics.duplicate.inc()
        return json_response(ChannelAck(ok=True, duplicate=True))
    state.metrics.stored.inc()
    return json_response(ChannelAck(ok=True, duplicate=False, event_id=event.id))


@functools.lru_cache(maxsize=VERIFIED_CACHE_SIZE)
def _verified(signer: Signer, token: str) -> tuple[Claims, bytes]:
    """A callback token's claims and the digest of what it grants. Only tokens that verify
    are kept (an exception is never cached), so a forger gains nothing; a kept token's
    expiry is still checked on every use, by the caller. Saves the token's canonical-form
    check and the digest on every callback to a URL seen before."""
    claims = signer.verify(CALLBACK, token)
    return claims, claims.digest()


async def _open_inbox(state: HubState, claims: Claims) -> Inbox:
    """The channel a URL names, if it still takes deliveries: 410 once erased, 401 once
    the URL or the key that made the channel is revoked."""
    assert claims.channel_id is not None
    inbox = await state.lookups.channel(claims.channel_id)
    if inbox is None:
        raise Gone("gone", "the channel was deleted")
    if inbox.channel.owner in state.keys.revoked:
        raise Unauthorized("revoked", "the key this callback URL was issued to is revoked")
    if claims.url_id is not None and await state.lookups.url_revoked(claims.url_id):
        raise Unauthorized("revoked", "this callback URL was revoked")
    return inbox


async def _task_callback(
    state: HubState, request: Request, arrival: intake.Arrival, task_id: str
) -> Response:
    """A provider reporting on a task: verified (signature over the raw bytes), then applied
    in one transaction with the delivery, once however often it is sent."""
    task = await state.store.get_task(task_id)
    provider = state.engine.providers.get(task.provider) if task is not None else None
    if task is None or provider is None:
        raise not_found("task")
    try:
        outcome = await provider.parse_callback(request.headers, arrival.body, task.callback_secret)
    except CallbackRejected as exc:
        raise _REJECTED[exc.reason](_CODES[exc.reason], exc.message) from None
    delivery = intake.raw_delivery(arrival, task.channel_id, task.id, task.provider_task_id, None)
    applied = await state.engine.apply_callback(task.id, outcome, delivery)
    state.metrics.callbacks.labels("task").inc()
    return json_response(TaskAck(ok=True, applied=applied))
