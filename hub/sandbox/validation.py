"""Checking request fields. Failures raise ``ApiError``; each emulator renders it in its
own provider's error shape, so the checks themselves stay provider-neutral.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from urllib.parse import urlsplit


class ApiError(Exception):
    """A request the emulator refuses: HTTP status and message, and optionally the
    provider's error code, a detail naming the offending field, and response headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})


def invalid(message: str) -> ApiError:
    return ApiError(400, message)


def text(value: object, name: str, *, max_length: int | None = None) -> str:
    """A required, non-blank string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise invalid(f"{name} is required")
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    if max_length is not None and len(value) > max_length:
        raise invalid(f"{name} is longer than {max_length} characters")
    return value


def optional_text(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    return value


def choice(value: object, name: str, allowed: Collection[str], default: str) -> str:
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value not in allowed:
        raise invalid(f"{name} must be one of: {', '.join(allowed)}")
    return value


def integer(value: object, name: str, low: int, high: int, default: int) -> int:
    """An integer in [low, high]; multipart sends numbers as text, so digits are accepted."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise invalid(f"{name} must be an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise invalid(f"{name} must be an integer") from None
    if not isinstance(value, int):
        raise invalid(f"{name} must be an integer")
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}")
    return value


def boolean(value: object, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean")
    return value


def http_url(value: object, name: str) -> str:
    """An absolute http(s) URL, or a data: URL (emulators accept inline images too)."""
    url = text(value, name)
    if url.startswith("data:"):
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"{name} must be an http(s) URL")
    return url


def callback_url(value: object, name: str) -> str | None:
    """An optional http(s) URL a result is POSTed to; empty means none."""
    if value is None or value == "":
        return None
    url = text(value, name)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"{name} must be an http(s) URL")
    return url
