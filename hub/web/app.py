"""``create_app(settings)``: the routes, the error shape, and the lifespan that owns every
resource."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from hub.config.settings import Settings
from hub.errors import HubError
from hub.web import errors, openapi
from hub.web.middleware import CallbackIntake, RequestIds, is_callback
from hub.web.routes import (
    blobs,
    callbacks,
    channels,
    dashboard,
    deliveries,
    health,
    openai_edits,
    task_cancel,
    tasks,
    usage,
    webhooks,
)
from hub.web.state import HubState

log = logging.getLogger("hub")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def create_app(settings: Settings) -> Starlette:
    state = HubState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.open()
        try:
            yield
        finally:
            await state.close()

    routes: list[BaseRoute] = [
        Route("/healthz", health.healthz, methods=["GET"]),
        # For Prometheus, not the API: left out of /openapi.json.
        Route("/metrics", health.metrics, methods=["GET"], include_in_schema=False),
        Route("/openapi.json", openapi.serve, methods=["GET"]),
        Route("/callbacks/{token}", callbacks.receive, methods=["POST"]),
        Route("/v1/channels", channels.create, methods=["POST"]),
        Route("/v1/channels", channels.index, methods=["GET"]),
        Route("/v1/channels/{channel_id}", channels.show, methods=["GET"]),
        Route("/v1/channels/{channel_id}", channels.delete, methods=["DELETE"]),
        Route(
            "/v1/channels/{channel_id}/callback-urls",
            channels.list_callback_urls,
            methods=["GET"],
        ),
        Route("/v1/channels/{channel_id}/events", channels.stream, methods=["GET"]),
        Route("/v1/channels/{channel_id}/tasks/{task_id}", channels.task_result, methods=["GET"]),
        Route("/v1/channels/{channel_id}/deliveries", deliveries.index, methods=["GET"]),
        Route("/v1/channels/{channel_id}/deliveries.ndjson", deliveries.export, methods=["GET"]),
        Route("/v1/deliveries/{delivery_id}", deliveries.show, methods=["GET"]),
        Route("/v1/deliveries/{delivery_id}/body", deliveries.body, methods=["GET"]),
        Route("/v1/deliveries/{delivery_id}/redeliver", deliveries.redeliver, methods=["POST"]),
        Route("/v1/callback-urls", channels.create_callback_url, methods=["POST"]),
        Route("/v1/callback-urls/{url_id}", channels.revoke_callback_url, methods=["DELETE"]),
        Route("/v1/tasks", tasks.create, methods=["POST"]),
        Route("/v1/tasks", tasks.index, methods=["GET"]),
        Route("/v1/tasks/{task_id}", tasks.show, methods=["GET"]),
        Route("/v1/tasks/{task_id}/events", tasks.stream, methods=["GET"]),
        Route("/v1/tasks/{task_id}/cancel", task_cancel.create, methods=["POST"]),
        Route("/v1/usage", usage.show, methods=["GET"]),
        Route("/v1/uploads", blobs.upload, methods=["POST"]),
        Route("/v1/blobs/{blob_id}", blobs.show, methods=["GET"]),
        Route("/blobs/{token}", blobs.public, methods=["GET"]),
        Route("/", dashboard.index, methods=["GET"], include_in_schema=False),
        Route("/dashboard/{name}", dashboard.asset, methods=["GET"], include_in_schema=False),
        Route("/v1/images/edits", openai_edits.edit, methods=["POST"]),
        Route("/v1/webhooks", webhooks.create, methods=["POST"]),
        Route("/v1/webhooks", webhooks.index, methods=["GET"]),
        Route("/v1/webhooks/{webhook_id}", webhooks.show, methods=["GET"]),
        Route("/v1/webhooks/{webhook_id}", webhooks.delete, methods=["DELETE"]),
    ]
    if state.sandbox is not None:
        # The providers' emulators, in-process; the hub's lifespan starts and stops them.
        routes.append(Mount("/sandbox", app=state.sandbox.app))
    app = _Hub(
        CallbackIntake(access_log=settings.access_log),
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestIds, access_log=settings.access_log)],
        exception_handlers={
            HubError: _hub_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    # A trailing slash is a 404 in the error shape, not an empty 307 to a route that may
    # not take the method (clients seldom follow a redirect for a POST anyway).
    app.router.redirect_slashes = False
    app.state.hub = state
    return app


class _Hub(Starlette):
    """Starlette, with callbacks answered ahead of its middleware stack and router (the
    hot path: see hub.web.middleware)."""

    def __init__(self, callbacks: CallbackIntake, **options: Any) -> None:
        super().__init__(**options)
        self._callbacks = callbacks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_callback(scope):
            scope["app"] = self
            await self._callbacks(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _hub_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HubError)
    return errors.response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return errors.error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    # The path can hold a callback token: log the route, not the URL.
    log.error("unhandled error on %s %s", request.method, _route_name(request), exc_info=exc)
    return errors.internal_error()


def _route_name(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "?")
