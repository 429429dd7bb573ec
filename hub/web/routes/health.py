"""``GET /healthz`` (the process answers and the store is reachable) and ``GET /metrics``."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from hub import __version__
from hub.errors import Forbidden, Unauthorized
from hub.metrics import CONTENT_TYPE
from hub.web.routes.common import hub, json_response
from hub.web.shapes import Component, Health

log = logging.getLogger("hub")


async def healthz(request: Request) -> Response:
    """200 when the store answers and every background loop is well; else 503, naming
    what is not (a loop that died, keeps failing, or has stopped beating)."""
    state = hub(request)
    healthy, components = state.health.report()
    store: Literal["ok", "unreachable", "failed"] = "ok"
    if state.failed is not None:
        store = "failed"
    else:
        try:
            await state.store.ping()
        except Exception:
            log.exception("health check: store unreachable")
            store = "unreachable"
    shown = {name: msgspec.convert(entry, Component) for name, entry in components.items()}
    unwell = sorted(name for name, entry in components.items() if entry["state"] != "ok")
    if store != "ok" or not healthy:
        unwell += [] if store == "ok" else ["store"]
        body = Health("error", store, version=__version__, components=shown, unwell=unwell)
        return json_response(body, 503)
    return json_response(Health("ok", store, version=__version__, components=shown))


async def metrics(request: Request) -> Response:
    """For Prometheus: the text exposition format. With HUB_METRICS_TOKEN, for the bearer
    of that token; without, for clients on this machine only: the counts say how busy
    the hub and its providers are, which is nobody else's business."""
    state = hub(request)
    token = state.settings.metrics_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise Unauthorized("unauthorized", "/metrics needs the HUB_METRICS_TOKEN bearer")
    elif not _loopback(request):
        raise Forbidden("forbidden", "/metrics answers only on loopback without HUB_METRICS_TOKEN")
    body = await state.render_metrics()
    return Response(body, media_type=CONTENT_TYPE)


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client is not None else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
