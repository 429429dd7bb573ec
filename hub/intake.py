"""``POST /callbacks/{token}`` dispatched ahead of Starlette's router.

It is the hot path: the handler's own work costs less than the router's matching and the
exception layers around it. This middleware sends those requests straight to the same
handler, with the same error shape; everything else goes on to the router.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from hub.errors import HubError, internal_error
from hub.routes.callbacks import receive as receive_callback

log = logging.getLogger("hub")

PREFIX = "/callbacks/"


class CallbackIntake:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith(PREFIX)
            or "/" in path[len(PREFIX) :]
            or len(path) == len(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"token": path[len(PREFIX) :]}
        request = Request(scope, receive)
        response: Response
        try:
            response = await receive_callback(request)
        except HubError as exc:
            response = exc.response()
            _count(request, str(exc.status))
        except Exception:
            # The path holds a credential: log the route, not the URL.
            log.exception("unhandled error on POST /callbacks/{token}")
            response = internal_error()
            _count(request, "500")
        await response(scope, receive, send)


def _count(request: Request, outcome: str) -> None:
    """A refused callback, by status (the handler counts the accepted ones)."""
    request.app.state.hub.metrics.callbacks.labels(outcome).inc()
