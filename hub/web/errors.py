"""Domain errors as HTTP answers: one table of statuses, one JSON shape,
``{"error": {"code", "message", "field"?}}``."""

from __future__ import annotations

import math

import msgspec
from starlette.responses import Response

from hub import errors
from hub.shapes import given
from hub.web.shapes import Error, ErrorDetail

STATUSES: dict[type[errors.HubError], int] = {
    errors.Malformed: 400,
    errors.Unauthorized: 401,
    errors.PaymentRequired: 402,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.TooSlow: 408,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.TooLarge: 413,
    errors.Unsupported: 415,
    errors.Invalid: 422,
    errors.RateLimited: 429,
    errors.Unavailable: 503,
}


def status_of(exc: errors.HubError) -> int:
    for kind in type(exc).__mro__:
        status = STATUSES.get(kind)
        if status is not None:
            return status
    return 400


def headers_of(exc: errors.HubError) -> dict[str, str]:
    headers = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, errors.Unauthorized) and exc.code == "unauthorized":
        headers["www-authenticate"] = "Bearer"
    return headers


def response(exc: errors.HubError) -> Response:
    """The answer to a domain error."""
    return error_response(status_of(exc), exc.code, exc.message, headers_of(exc), exc.field)


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    field: str | None = None,
) -> Response:
    body = msgspec.json.encode(Error(ErrorDetail(code, message, given(field))))
    return Response(body, status, headers=headers, media_type="application/json")


def internal_error() -> Response:
    """The answer to an unexpected failure: the JSON shape, no detail."""
    return error_response(500, "internal_error", "the hub failed to handle this request")
