"""``GET /healthz`` (the process answers and the store is reachable) and ``GET /metrics``."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from hub import __version__
from hub.metrics import CONTENT_TYPE
from hub.web.routes.common import hub, json_response

log = logging.getLogger("hub")


async def healthz(request: Request) -> Response:
    """200 when the store answers and every background loop is well; else 503, naming
    what is not (a loop that died, keeps failing, or has stopped beating)."""
    state = hub(request)
    healthy, components = state.health.report()
    body: dict[str, object] = {"status": "ok", "store": "ok", "version": __version__}
    if state.failed is not None:
        body["store"] = "failed"
    else:
        try:
            await state.store.ping()
        except Exception:
            log.exception("health check: store unreachable")
            body["store"] = "unreachable"
    body["components"] = components
    unwell = sorted(name for name, entry in components.items() if entry["state"] != "ok")
    if body["store"] != "ok" or not healthy:
        body["status"] = "error"
        body["unwell"] = unwell + ([] if body["store"] == "ok" else ["store"])
        return json_response(body, 503)
    return json_response(body)


async def metrics(request: Request) -> Response:
    """For Prometheus: the text exposition format."""
    body = await hub(request).render_metrics()
    return Response(body, media_type=CONTENT_TYPE)
