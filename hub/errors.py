"""The one error type handlers raise, and its JSON shape: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import orjson
from starlette.responses import Response


class HubError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return error_response(self.status, self.code, self.message, self.headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return Response(body, status, headers=headers, media_type="application/json")


def internal_error() -> Response:
    """The answer to an unexpected failure: the JSON shape, no detail."""
    return error_response(500, "internal_error", "the hub failed to handle this request")


def invalid(field: str, message: str) -> HubError:
    """422 naming the field at fault."""
    return HubError(422, "invalid_request", f"{field}: {message}")


def not_found(what: str) -> HubError:
    return HubError(404, "not_found", f"{what} not found")
