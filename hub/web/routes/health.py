"""``GET /healthz`` (the process answers and the store is reachable) and ``GET /metrics``."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from hub import __version__
from hub.metrics import CONTENT_TYPE
from hub.web.routes.common import hub, json_response
from hub.web.shapes import Health

log = logging.getLogger("hub")


async def healthz(request: Request) -> Response:
    state = hub(request)
    try:
        await state.store.ping()
    except Exception:
        log.exception("health check: store unreachable")
        return json_response(Health(status="error", store="unreachable"), 503)
    return json_response(Health(status="ok", store="ok", version=__version__))


async def metrics(request: Request) -> Response:
    """For Prometheus: the text exposition format."""
    body = await hub(request).render_metrics()
    return Response(body, media_type=CONTENT_TYPE)
