"""The ceiling for a Python service: a bare Starlette endpoint that reads the body and
answers 200. scripts/bench serves it like the hub is served, one process:

    uvicorn --app-dir bench bare:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

OK = b'{"ok":true}'


async def receive(request: Request) -> Response:
    await request.body()
    return Response(OK, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(OK, media_type="application/json")


app = Starlette(
    routes=[
        Route("/cb", receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)
