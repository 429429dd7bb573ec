"""HTTP plumbing shared by the emulators: bounded bodies and forms, keys, URLs, ids and
timestamps."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.bodies.multipart import MalformedForm, bounded_form
from hub.sandbox.settings import SandboxSettings
from hub.sandbox.state import FileStore
from hub.sandbox.validation import ApiError

MAX_JSON_BODY = 8 * 1024 * 1024
# The providers allow 16 images of up to 50 MB each; the sandbox holds bodies in memory,
# so it bounds the whole request well below that product.
MAX_MULTIPART_BODY = 128 * 1024 * 1024
MAX_FORM_PARTS = 100


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "Request body is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "Request body is too large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int = MAX_JSON_BODY) -> dict[str, Any]:
    body = await read_body(request, limit)
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "Request body must be a JSON object")
    return value


@asynccontextmanager
async def multipart_form(request: Request, limit: int) -> AsyncIterator[FormData]:
    """The multipart/form-data body, read within ``limit`` bytes and then parsed; its files
    are closed on exit. A malformed body is a 400 in the provider's own error shape."""
    body = await read_body(request, limit)
    try:
        async with bounded_form(request.scope, body, MAX_FORM_PARTS) as form:
            yield form
    except MalformedForm as error:
        raise ApiError(400, f"Malformed multipart body: {error.reason}") from None


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "")


def media_type(request: Request) -> str:
    return content_type(request).split(";", 1)[0].strip().lower()


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_owner(settings: SandboxSettings, key: str | None) -> str | None:
    """Who a key is: None if it is refused. With a configured key only that one is taken
    (compared in constant time); without, any non-empty key is, as a tenant of its own.
    Every job is stored under its owner and found only by it, so one key can neither list,
    read, cancel nor learn the callback URL of another's jobs."""
    if not key:
        return None
    if settings.api_key is not None and not hmac.compare_digest(
        key.encode(), settings.api_key.encode()
    ):
        return None
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def key_accepted(settings: SandboxSettings, key: str | None) -> bool:
    return key_owner(settings, key) is not None


def mount_url(request: Request) -> str:
    """The absolute URL of the provider's mount point, e.g. http://host/sandbox/eachlabs.

    Starlette's Mount puts its prefix in root_path, so this holds however deeply the
    sandbox is mounted inside another app.
    """
    root = request.scope.get("root_path", "")
    return str(request.url.replace(path=root, query="", fragment="")).rstrip("/")


def new_id() -> str:
    return str(uuid.uuid4())


def unix_now() -> float:
    return time.time()


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_bytes(value: object) -> bytes:
    """The exact bytes sent for a callback body; signatures are computed over these."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def files_route(files: FileStore) -> Route:
    """``GET /files/{name}``: outputs and uploads, public like the providers' CDN URLs."""

    async def serve(request: Request) -> Response:
        stored = files.get(request.path_params["name"])
        if stored is None:
            raise ApiError(404, "File not found")
        return Response(
            stored.data,
            media_type=stored.content_type,
            headers={"Cache-Control": "public, max-age=604800, immutable"},
        )

    return Route("/files/{name}", serve, methods=["GET"])
