"""The dashboard: static files served by the hub itself (no build step)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from hub.errors import not_found

ROOT = Path(__file__).resolve().parent.parent / "dashboard"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


async def index(request: Request) -> Response:
    return _file("index.html")


async def asset(request: Request) -> Response:
    return _file(request.path_params["name"])


def _file(name: str) -> Response:
    # A fixed list: nothing else under the package can be asked for.
    if name not in FILES:
        raise not_found("file")
    return FileResponse(
        ROOT / name,
        media_type=FILES[name],
        headers={
            "cache-control": "no-cache",
            # The page runs only its own script and talks only to this hub.
            "content-security-policy": (
                "default-src 'self'; img-src 'self' blob: data:; style-src 'self';"
                " script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
            ),
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
        },
    )
