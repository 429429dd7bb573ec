"""The middleware every request passes: a request id for it, and the callback shortcut.

``RequestIds`` gives every request an id (the caller's ``X-Request-ID`` if it is a sane
one, else a fresh one), answers it in the response's ``X-Request-ID`` and keeps it in the
context variable every log record picks up (``hub.logs.request_id``). With
``HUB_ACCESS_LOG=1`` it also logs a line per request, naming the route's template, never
the path: a callback URL's path is a credential.

``CallbackIntake`` answers ``POST /callbacks/{token}`` ahead of all of that: the app calls
it before Starlette's middleware stack and router. It is the hot path: the handler's own
work costs less than the layers around it (the error middleware's and the request ids'
wrappers of ``send``, the router's matching, the exception layers). It does what those
layers do for a callback, the same way: the request id (answered in ``X-Request-ID`` and
set for the log records), the access log line, the error shape for a refusal (counted by
status), a logged 500 for anything unexpected. Everything else goes on to the stack.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.errors import HubError
from hub.logs import request_id
from hub.web import errors
from hub.web.routes.callbacks import receive as receive_callback

log = logging.getLogger("hub")
access = logging.getLogger("hub.access")

_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
PREFIX = "/callbacks/"


class RequestIds:
    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log
        self._ids = _Ids()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming(scope) or self._ids.new()
        token = request_id.set(rid)
        status = 0
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                access.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    _route(scope),
                    status,
                    (time.perf_counter() - started) * 1000,
                )
            request_id.reset(token)


class _Ids:
    def __init__(self) -> None:
        # A random prefix per process and a counter: unique across replicas and restarts,
        # without a call into the OS's random source on every request.
        self._prefix = secrets.token_hex(3)
        self._count = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):010x}"


def _incoming(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _SANE_ID.fullmatch(value):
            return str(value.decode())
    return None


def _route(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "?"))
    path = str(scope.get("path", ""))
    if path.startswith("/callbacks/"):
        return "/callbacks/{token}"  # answered ahead of the router
    return "(unrouted)"


def is_callback(scope: Scope) -> bool:
    """``POST /callbacks/{token}``, which ``CallbackIntake`` answers."""
    path: str = scope.get("path", "")
    return (
        scope["type"] == "http"
        and scope["method"] == "POST"
        and path.startswith(PREFIX)
        and len(path) > len(PREFIX)
        and "/" not in path[len(PREFIX) :]
    )


class CallbackIntake:
    """Answers a callback POST (see the module's docstring); the app routes only those
    here (``is_callback``), with ``scope["app"]`` set."""

    def __init__(self, *, access_log: bool = False) -> None:
        self.access_log = access_log
        self._ids = _Ids()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = _incoming(scope) or self._ids.new()
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 0
        try:
            path: str = scope["path"]
            scope["path_params"] = {"token": path[len(PREFIX) :]}
            request = Request(scope, receive)
            response: Response
            try:
                response = await receive_callback(request)
            except HubError as exc:
                response = errors.response(exc)
                _count(request, str(response.status_code))
            except Exception:
                # The path holds a credential: log the route, not the URL.
                log.exception("unhandled error on POST /callbacks/{token}")
                response = errors.internal_error()
                _count(request, "500")
            status = response.status_code
            headers = response.raw_headers
            headers.append((b"x-request-id", rid.encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": response.body})
        finally:
            if self.access_log:
                access.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    "/callbacks/{token}",
                    status,
                    (time.perf_counter() - started) * 1000,
                )
            request_id.reset(token)


def _count(request: Request, outcome: str) -> None:
    """A refused callback, by status (the handler counts the accepted ones)."""
    request.app.state.hub.metrics.callbacks.labels(outcome).inc()
